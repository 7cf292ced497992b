{#
    One row per customer per unbroken run of invoice lines in one country:
    a customer who moves from France to Germany and back has three spells.
    A spell ends when the next one starts; the last one is open.
#}
with

invoice_lines as (

    select
        invoice_line_id,
        invoice_id,
        customer_id,
        country,
        invoiced_at
    from {{ ref('stg_online_retail__invoice_lines') }}

),

invoice_countries as (

    {# One row per invoice and country: far fewer rows to order than lines. #}
    select
        customer_id,
        country,
        min(invoiced_at) as invoiced_at,
        min(invoice_line_id) as invoice_line_id
    from invoice_lines
    where customer_id is not null
    group by customer_id, invoice_id, country

),

country_changes as (

    select
        invoice_line_id,
        customer_id,
        country,
        invoiced_at,
        coalesce(
            lag(country) over (
                partition by customer_id
                order by invoiced_at, invoice_line_id
            ) <> country,
            true
        ) as is_new_spell
    from invoice_countries

),

spells_numbered as (

    select
        customer_id,
        country,
        invoiced_at,
        row_number() over (
            partition by customer_id
            order by invoiced_at, invoice_line_id
        ) as spell_number
    from country_changes
    where is_new_spell

),

spells_bounded as (

    select
        customer_id,
        spell_number,
        country,
        invoiced_at as started_at,
        lead(invoiced_at) over (
            partition by customer_id order by spell_number
        ) as ended_at
    from spells_numbered

),

final as (

    {# Two countries on one timestamp would make an empty spell; drop it. #}
    select
        customer_id,
        spell_number,
        country,
        started_at,
        ended_at
    from spells_bounded
    where ended_at is null or ended_at > started_at

)

select * from final
