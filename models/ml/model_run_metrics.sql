{#
    One row per model run x model x metric, on the whole population: the value
    at the run's holdout cutoff, the mean over the backtest cutoffs (what the
    run chose its model by) and the value pooled over every cutoff, beside the
    run's trained_at and status. Empty until `cohortcast train` has run.
#}
with

model_runs as (

    select
        run_id,
        model_name,
        status,
        trained_at,
        holdout_as_of_date
    from {{ source('ml', 'model_runs') }}

),

model_evaluations as (

    select
        run_id,
        cutoff_date,
        model,
        metric,
        value,
        row_count
    from {{ source('ml', 'model_evaluations') }}
    where cohort_slice = 'all'

),

metrics_per_run_and_model as (

    {# A null cutoff_date marks the row pooled over every cutoff. #}
    select
        run_id,
        model,
        metric,
        avg(value) filter (where cutoff_date is not null) as backtest_mean_value,
        count(*) filter (where cutoff_date is not null) as cutoff_count,
        max(value) filter (where cutoff_date is null) as pooled_value,
        max(row_count) filter (where cutoff_date is null) as pooled_row_count
    from model_evaluations
    group by run_id, model, metric

),

holdout_values as (

    select
        model_evaluations.run_id,
        model_evaluations.model,
        model_evaluations.metric,
        model_evaluations.value as holdout_value
    from model_evaluations
    inner join model_runs
        on
            model_evaluations.run_id = model_runs.run_id
            and model_evaluations.cutoff_date = model_runs.holdout_as_of_date

),

final as (

    select
        metrics_per_run_and_model.run_id,
        metrics_per_run_and_model.model,
        metrics_per_run_and_model.metric,
        model_runs.trained_at,
        model_runs.status as run_status,
        metrics_per_run_and_model.model = model_runs.model_name
            as is_chosen_model,
        metrics_per_run_and_model.metric in ('brier', 'log_loss', 'ece')
            as is_lower_better,
        model_runs.holdout_as_of_date,
        holdout_values.holdout_value,
        metrics_per_run_and_model.backtest_mean_value,
        metrics_per_run_and_model.cutoff_count,
        metrics_per_run_and_model.pooled_value,
        metrics_per_run_and_model.pooled_row_count
    from metrics_per_run_and_model
    left join model_runs
        on metrics_per_run_and_model.run_id = model_runs.run_id
    left join holdout_values
        on
            metrics_per_run_and_model.run_id = holdout_values.run_id
            and metrics_per_run_and_model.model = holdout_values.model
            and metrics_per_run_and_model.metric = holdout_values.metric

)

select * from final
