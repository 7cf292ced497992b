{#
    Typed invoice lines with UTC timestamps. Nothing is dropped: cancellations,
    adjustments, non-product lines and lines without a customer are flagged,
    and each model downstream chooses what it counts.
#}
with

online_retail_lines as (

    select
        source_line_number,
        invoice_no,
        stock_code,
        description,
        quantity,
        invoice_date,
        unit_price,
        customer_id,
        country,
        loaded_at
    from {{ source('online_retail', 'online_retail_lines') }}

),

typed as (

    select
        source_line_number as invoice_line_id,
        trim(invoice_no) as invoice_id,
        trim(stock_code) as stock_code,
        nullif(trim(description), '') as product_description,
        quantity,
        unit_price as unit_price_amount,
        nullif(trim(customer_id), '') as customer_id,
        trim(country) as country,
        {{ source_local_to_utc('invoice_date') }} as invoiced_at,
        loaded_at
    from online_retail_lines

),

flagged as (

    select
        invoice_line_id,
        invoice_id,
        stock_code,
        product_description,
        quantity,
        unit_price_amount,
        quantity * unit_price_amount as line_amount,
        customer_id,
        country,
        invoiced_at,
        loaded_at,
        starts_with(invoice_id, 'C') as is_cancellation,
        starts_with(invoice_id, 'A') as is_adjustment,
        {{ is_non_product_stock_code('stock_code') }} as is_non_product,
        customer_id is not null as has_customer
    from typed

),

final as (

    select
        *,
        (
            has_customer
            and not is_cancellation
            and not is_adjustment
            and quantity > 0
        ) as is_purchase
    from flagged

)

select * from final
