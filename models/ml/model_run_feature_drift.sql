{#
    One row per model run x feature: population stability between the run's
    training rows and the snapshot it scored, ranked within the run. Empty
    until `cohortcast score` has run.
#}
with

model_runs as (

    select
        run_id,
        status,
        trained_at
    from {{ source('ml', 'model_runs') }}

),

feature_drift as (

    select
        run_id,
        feature,
        psi,
        is_drifted,
        reference_as_of_date,
        scored_as_of_date
    from {{ source('ml', 'feature_drift') }}

),

final as (

    select
        feature_drift.run_id,
        feature_drift.feature,
        model_runs.trained_at,
        model_runs.status as run_status,
        feature_drift.reference_as_of_date,
        feature_drift.scored_as_of_date,
        feature_drift.psi,
        feature_drift.is_drifted,
        rank() over (
            partition by feature_drift.run_id
            order by feature_drift.psi desc nulls last
        ) as psi_rank
    from feature_drift
    left join model_runs
        on feature_drift.run_id = model_runs.run_id

)

select * from final
