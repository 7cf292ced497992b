{#
    Customers by the product amount of their first purchase, in GBP bands
    (var first_order_size_band_limits), e.g. 100_to_250.
#}
with

customers as (

    select
        customer_id,
        first_ordered_at,
        first_order_amount
    from {{ ref('customers') }}
    where first_ordered_at is not null

),

final as (

    select
        customer_id,
        'first_order_size_band' as cohort_name,
        {{ amount_band('first_order_amount', var('first_order_size_band_limits')) }}
            as cohort_key,
        first_ordered_at as entered_at,
        null::timestamptz as exited_at
    from customers

)

select * from final
