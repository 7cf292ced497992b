{# No period retains more customers than the cohort has, or fewer than none. #}
with

cohort_retention as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number,
        cohort_customer_count,
        retained_customer_count
    from {{ ref('cohort_retention') }}

),

final as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number,
        cohort_customer_count,
        retained_customer_count
    from cohort_retention
    where
        retained_customer_count > cohort_customer_count
        or retained_customer_count < 0
        or cohort_customer_count <= 0

)

select * from final
