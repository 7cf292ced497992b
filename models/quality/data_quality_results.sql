{#
    One row per expectation per validation run of the data-quality gate, with
    the run's pipeline step, start and outcome, and a flag on the latest
    validation of each checked table. A view (folder config): the reader role
    reads it with the owner's rights, and it shows a gate's results as soon as
    Python commits them, also when a blocking failure stopped the run before
    dbt could rebuild anything.
#}
with

validation_runs as (

    select
        validation_run_id,
        pipeline_step,
        started_at,
        success
    from {{ source('quality', 'validation_runs') }}

),

validation_results as (

    select
        validation_run_id,
        table_name,
        expectation,
        column_name,
        success,
        severity,
        observed_value,
        failing_examples,
        checked_at
    from {{ source('quality', 'validation_results') }}

),

latest_validation_per_table as (

    {# A run records every result with one checked_at; the run id breaks ties. #}
    select distinct on (table_name)
        table_name,
        validation_run_id
    from validation_results
    order by table_name asc, checked_at desc nulls last, validation_run_id desc

),

final as (

    select
        validation_results.validation_run_id,
        validation_results.table_name,
        validation_results.expectation,
        validation_results.column_name,
        validation_runs.pipeline_step,
        validation_runs.started_at as run_started_at,
        validation_runs.success as is_run_successful,
        validation_results.checked_at,
        validation_results.severity,
        validation_results.success as is_successful,
        validation_results.observed_value,
        validation_results.failing_examples,
        latest_validation_per_table.validation_run_id
        is not null as is_latest_validation
    from validation_results
    left join validation_runs
        on validation_results.validation_run_id = validation_runs.validation_run_id
    left join latest_validation_per_table
        on
            validation_results.table_name = latest_validation_per_table.table_name
            and validation_results.validation_run_id
            = latest_validation_per_table.validation_run_id

)

select * from final
