{#
    Customers by the country on their invoices, for as long as they invoice
    from it: a customer who moves from France to Germany leaves the France key
    when their first German line arrives.
#}
with

country_spells as (

    select
        customer_id,
        country,
        started_at,
        ended_at
    from {{ ref('int_customer_country_spells') }}

),

final as (

    select
        customer_id,
        'country' as cohort_name,
        country as cohort_key,
        started_at as entered_at,
        ended_at as exited_at
    from country_spells

)

select * from final
