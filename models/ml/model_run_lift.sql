{#
    One row per model run x model x backtest cutoff, plus one row per run and
    model pooled over every cutoff (cutoff_date null), on the whole population:
    how much better than chance the model finds churners.

    The churn rate of the evaluated rows is not stored; it is the PR AUC of the
    base_rate baseline at a cutoff, because a constant score ranks no row above
    another and its average precision is the share of positives. Pooled over
    cutoffs the baseline is not constant (it is refitted at each), so the
    pooled churn rate is the row-weighted mean of the cutoffs' rates.
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
        metric,
        value,
        row_count
    from {{ source('ml', 'model_evaluations') }}
    where
        cohort_slice = 'all'
        and metric in ('top_decile_lift', 'pr_auc')

),

no_skill_model as (

    -- The baseline that scores everyone with the training churn rate.
    select 'base_rate' as model_name

),

lift_per_cutoff as (

    select
        run_id,
        cutoff_date,
        model,
        max(row_count) as row_count,
        max(value) filter (where metric = 'top_decile_lift') as top_decile_lift,
        max(value) filter (where metric = 'pr_auc') as pr_auc
    from model_evaluations
    group by run_id, cutoff_date, model

),

churn_rate_per_cutoff as (

    select
        lift_per_cutoff.run_id,
        lift_per_cutoff.cutoff_date,
        lift_per_cutoff.row_count,
        lift_per_cutoff.pr_auc as churn_rate
    from lift_per_cutoff
    inner join no_skill_model
        on lift_per_cutoff.model = no_skill_model.model_name
    where lift_per_cutoff.cutoff_date is not null

),

pooled_churn_rate as (

    select
        run_id,
        sum(churn_rate * row_count) / sum(row_count) as churn_rate
    from churn_rate_per_cutoff
    group by run_id

),

churn_rates as (

    select
        run_id,
        cutoff_date,
        churn_rate
    from churn_rate_per_cutoff
    union all
    select
        run_id,
        null::date as cutoff_date,
        churn_rate
    from pooled_churn_rate

),

final as (

    select
        lift_per_cutoff.run_id,
        lift_per_cutoff.model,
        lift_per_cutoff.cutoff_date,
        lift_per_cutoff.cutoff_date is null as is_pooled,
        model_runs.trained_at,
        model_runs.status as run_status,
        lift_per_cutoff.model = model_runs.model_name as is_chosen_model,
        lift_per_cutoff.row_count,
        churn_rates.churn_rate,
        lift_per_cutoff.top_decile_lift,
        lift_per_cutoff.top_decile_lift * churn_rates.churn_rate
            as top_decile_churn_rate,
        lift_per_cutoff.pr_auc,
        lift_per_cutoff.pr_auc / nullif(churn_rates.churn_rate, 0) as pr_auc_lift
    from lift_per_cutoff
    left join model_runs
        on lift_per_cutoff.run_id = model_runs.run_id
    left join churn_rates
        on
            lift_per_cutoff.run_id = churn_rates.run_id
            and lift_per_cutoff.cutoff_date is not distinct from churn_rates.cutoff_date

)

select * from final
