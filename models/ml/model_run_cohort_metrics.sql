{#
    One row per model run x backtest cutoff (null: pooled over every cutoff) x
    model x cohort (cohort_name x cohort_key) x metric, for the cohorts with
    enough members to be evaluated, beside the same metric on everyone, so
    that analysts see where the model is weak. Empty until `cohortcast train`
    has run.
#}
with

model_runs as (

    select
        run_id,
        model_name,
        status,
        trained_at
    from {{ source('ml', 'model_runs') }}

),

model_evaluations as (

    select
        run_id,
        cutoff_date,
        model,
        cohort_slice,
        metric,
        value,
        row_count
    from {{ source('ml', 'model_evaluations') }}

),

overall_values as (

    select
        run_id,
        cutoff_date,
        model,
        metric,
        value as overall_value
    from model_evaluations
    where cohort_slice = 'all'

),

cohort_values as (

    {# A slice is `cohort_name=cohort_key`; keys may hold `=`, names do not. #}
    select
        run_id,
        cutoff_date,
        model,
        split_part(cohort_slice, '=', 1) as cohort_name,
        substr(cohort_slice, strpos(cohort_slice, '=') + 1) as cohort_key,
        metric,
        value,
        row_count
    from model_evaluations
    where cohort_slice <> 'all'

),

final as (

    select
        cohort_values.run_id,
        cohort_values.cutoff_date,
        cohort_values.cutoff_date is null as is_pooled,
        cohort_values.model,
        cohort_values.cohort_name,
        cohort_values.cohort_key,
        cohort_values.metric,
        model_runs.trained_at,
        model_runs.status as run_status,
        cohort_values.model = model_runs.model_name as is_chosen_model,
        cohort_values.value,
        cohort_values.row_count,
        overall_values.overall_value
    from cohort_values
    left join model_runs
        on cohort_values.run_id = model_runs.run_id
    left join overall_values
        on
            cohort_values.run_id = overall_values.run_id
            and cohort_values.cutoff_date is not distinct from overall_values.cutoff_date
            and cohort_values.model = overall_values.model
            and cohort_values.metric = overall_values.metric

)

select * from final
