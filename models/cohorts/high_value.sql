{#
    Customers whose purchases have added up to var high_value_threshold_amount
    (GBP, product lines, before cancellations); they enter with the purchase
    that crossed it and stay.
#}
with

invoices as (

    select
        customer_id,
        invoice_id,
        invoiced_at,
        product_amount
    from {{ ref('int_invoices_aggregated') }}
    where is_order

),

running_totals as (

    select
        customer_id,
        invoiced_at,
        sum(product_amount) over (
            partition by customer_id
            order by invoiced_at, invoice_id
            rows between unbounded preceding and current row
        ) as cumulative_amount
    from invoices

),

threshold_crossings as (

    select
        customer_id,
        min(invoiced_at) as crossed_at
    from running_totals
    where cumulative_amount >= {{ var('high_value_threshold_amount') }}
    group by customer_id

),

final as (

    select
        customer_id,
        'high_value' as cohort_name,
        'high_value' as cohort_key,
        crossed_at as entered_at,
        null::timestamptz as exited_at
    from threshold_crossings

)

select * from final
