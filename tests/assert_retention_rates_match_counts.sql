{#
    Every rate is the ratio of the counts beside it (period 0 as the base for
    orders and revenue), recomputed here independently.
#}
with

cohort_retention as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number,
        cohort_customer_count,
        retained_customer_count,
        customer_retention_rate,
        order_count,
        order_retention_rate,
        revenue_amount,
        revenue_retention_rate
    from {{ ref('cohort_retention') }}

),

period_zero as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        order_count as base_order_count,
        revenue_amount as base_revenue_amount
    from cohort_retention
    where period_number = 0

),

recomputed as (

    select
        cohort_retention.cohort_name,
        cohort_retention.cohort_key,
        cohort_retention.period_grain,
        cohort_retention.period_number,
        cohort_retention.customer_retention_rate,
        cohort_retention.order_retention_rate,
        cohort_retention.revenue_retention_rate,
        cohort_retention.retained_customer_count::double precision
        / cohort_retention.cohort_customer_count as expected_customer_rate,
        cohort_retention.order_count::double precision
        / nullif(period_zero.base_order_count, 0) as expected_order_rate,
        cohort_retention.revenue_amount::double precision
        / nullif(period_zero.base_revenue_amount, 0)::double precision
            as expected_revenue_rate
    from cohort_retention
    inner join period_zero
        on
            cohort_retention.cohort_name = period_zero.cohort_name
            and cohort_retention.cohort_key = period_zero.cohort_key
            and cohort_retention.period_grain = period_zero.period_grain

),

final as (

    {# Rates are double precision: compare within a rounding tolerance. #}
    select *
    from recomputed
    where
        abs(customer_retention_rate - expected_customer_rate) > 1e-9
        or (order_retention_rate is null) <> (expected_order_rate is null)
        or abs(order_retention_rate - expected_order_rate) > 1e-9
        or (revenue_retention_rate is null) <> (expected_revenue_rate is null)
        or abs(revenue_retention_rate - expected_revenue_rate) > 1e-9

)

select * from final
