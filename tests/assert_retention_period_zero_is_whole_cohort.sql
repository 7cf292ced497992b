{# Period 0 of every cohort retains 100% of it. #}
with

cohort_retention as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        cohort_customer_count,
        retained_customer_count,
        customer_retention_rate
    from {{ ref('cohort_retention') }}
    where period_number = 0

),

final as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        cohort_customer_count,
        retained_customer_count,
        customer_retention_rate
    from cohort_retention
    where
        retained_customer_count <> cohort_customer_count
        or customer_retention_rate <> 1

)

select * from final
