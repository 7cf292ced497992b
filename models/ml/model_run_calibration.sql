{#
    One row per model run x model x decile of predicted probability (10 the
    riskiest), over the held-out rows of every backtest cutoff, with a flag for
    the latest published run. Empty until `cohortcast train` has run.
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

model_calibration as (

    select
        run_id,
        model,
        decile,
        row_count,
        mean_predicted,
        observed_rate
    from {{ source('ml', 'model_calibration') }}

),

latest_published_run as (

    select run_id
    from model_runs
    where status = 'published'
    order by trained_at desc, run_id desc
    limit 1

),

final as (

    select
        model_calibration.run_id,
        model_calibration.model,
        model_calibration.decile,
        model_runs.trained_at,
        model_runs.status as run_status,
        model_calibration.model = model_runs.model_name as is_chosen_model,
        latest_published_run.run_id is not null as is_latest_published_run,
        model_calibration.row_count,
        model_calibration.mean_predicted,
        model_calibration.observed_rate,
        model_calibration.observed_rate
        - model_calibration.mean_predicted as calibration_gap
    from model_calibration
    left join model_runs
        on model_calibration.run_id = model_runs.run_id
    left join latest_published_run
        on model_calibration.run_id = latest_published_run.run_id

)

select * from final
