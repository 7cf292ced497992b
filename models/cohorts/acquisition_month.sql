{# Customers by the UTC calendar month of their first purchase, e.g. 2011-03. #}
with

customers as (

    select
        customer_id,
        first_ordered_at
    from {{ ref('customers') }}
    where first_ordered_at is not null

),

final as (

    select
        customer_id,
        'acquisition_month' as cohort_name,
        to_char(first_ordered_at at time zone 'UTC', 'YYYY-MM') as cohort_key,
        first_ordered_at as entered_at,
        null::timestamptz as exited_at
    from customers

)

select * from final
