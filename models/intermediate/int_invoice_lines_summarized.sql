{#
    One row: when the data starts and ends, over every invoice line (with or
    without a customer). "The last event in the data" everywhere means
    last_invoiced_at.
#}
with

invoice_lines as (

    select invoiced_at
    from {{ ref('stg_online_retail__invoice_lines') }}

),

final as (

    select
        min(invoiced_at) as first_invoiced_at,
        max(invoiced_at) as last_invoiced_at,
        count(*) as invoice_line_count
    from invoice_lines

)

select * from final
