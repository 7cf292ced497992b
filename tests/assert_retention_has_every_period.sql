{#
    Zero periods are present: each cohort's periods run 0, 1, 2, ... with no
    gap, per grain.
#}
with

cohort_retention as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number
    from {{ ref('cohort_retention') }}

),

periods_per_cohort as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        count(*) as period_count,
        min(period_number) as first_period_number,
        max(period_number) as last_period_number
    from cohort_retention
    group by cohort_name, cohort_key, period_grain

),

final as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_count,
        first_period_number,
        last_period_number
    from periods_per_cohort
    where
        first_period_number <> 0
        or period_count <> last_period_number + 1

)

select * from final
