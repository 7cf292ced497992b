{#
    One row per invoice of a known customer: purchase orders and cancellations.
    Amounts count product lines only (postage, fees, vouchers and manual lines
    are not revenue here); cancellation amounts are negative.
#}
with

invoice_lines as (

    select
        invoice_id,
        customer_id,
        invoiced_at,
        quantity,
        line_amount,
        is_cancellation,
        is_non_product,
        is_purchase
    from {{ ref('stg_online_retail__invoice_lines') }}
    where has_customer and (is_purchase or is_cancellation)

),

aggregated as (

    select
        invoice_id,
        customer_id,
        min(invoiced_at) as invoiced_at,
        bool_or(is_cancellation) as is_cancellation,
        count(*) as line_count,
        coalesce(
            sum(line_amount) filter (where not is_non_product), 0
        ) as product_amount,
        coalesce(
            sum(quantity) filter (where not is_non_product), 0
        ) as item_quantity
    from invoice_lines
    group by invoice_id, customer_id

),

final as (

    select
        invoice_id,
        customer_id,
        invoiced_at,
        is_cancellation,
        not is_cancellation as is_order,
        line_count,
        product_amount,
        item_quantity
    from aggregated

)

select * from final
