{#
    One row per cohort (cohort_name x cohort_key) per risk band of the latest
    published churn predictions, for the cohorts customers are in now. Empty
    until a prediction has been published.
#}
with

cohort_membership as (

    select
        customer_id,
        cohort_name,
        cohort_key
    from {{ ref('cohort_membership') }}
    where exited_at is null

),

predictions as (

    select
        customer_id,
        as_of_date,
        churn_probability,
        risk_band,
        model_run_id
    from {{ source('ml', 'customer_churn_predictions') }}

),

risk_bands as (

    {% for risk_band in var('churn_risk_bands') -%}
        select
            '{{ risk_band }}'::text as risk_band,
            {{ loop.index }} as risk_band_rank
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

scorings as (

    select
        model_run_id,
        max(as_of_date) as as_of_date
    from predictions
    group by model_run_id

),

current_members as (

    select distinct
        cohort_name,
        cohort_key,
        customer_id
    from cohort_membership

),

members_scored as (

    select
        current_members.cohort_name,
        current_members.cohort_key,
        current_members.customer_id,
        predictions.churn_probability,
        predictions.risk_band
    from current_members
    left join predictions
        on current_members.customer_id = predictions.customer_id

),

cohort_totals as (

    select
        cohort_name,
        cohort_key,
        count(*) as member_count,
        count(churn_probability) as scored_count,
        avg(churn_probability) as mean_churn_probability,
        count(*) filter (where risk_band = 'high') as high_risk_count
    from members_scored
    group by cohort_name, cohort_key

),

band_totals as (

    select
        cohort_name,
        cohort_key,
        risk_band,
        count(*) as band_customer_count,
        avg(churn_probability) as band_mean_churn_probability
    from members_scored
    where risk_band is not null
    group by cohort_name, cohort_key, risk_band

),

final as (

    select
        cohort_totals.cohort_name,
        cohort_totals.cohort_key,
        risk_bands.risk_band,
        risk_bands.risk_band_rank,
        scorings.model_run_id,
        scorings.as_of_date,
        cohort_totals.member_count,
        cohort_totals.scored_count,
        coalesce(band_totals.band_customer_count, 0) as band_customer_count,
        coalesce(band_totals.band_customer_count, 0)::double precision
        / nullif(cohort_totals.scored_count, 0) as band_share,
        band_totals.band_mean_churn_probability,
        cohort_totals.mean_churn_probability,
        cohort_totals.high_risk_count
    from cohort_totals
    cross join risk_bands
    cross join scorings
    left join band_totals
        on
            cohort_totals.cohort_name = band_totals.cohort_name
            and cohort_totals.cohort_key = band_totals.cohort_key
            and risk_bands.risk_band = band_totals.risk_band

)

select * from final
