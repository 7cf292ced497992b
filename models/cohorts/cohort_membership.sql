{{
    config(
        materialized='table',
        post_hook=[
            "{{ check_cohort_contract(this) }}",
            "{{ grant_select_to_reader(this) }}",
        ],
    )
}}
{#
    Every cohort definition in models/cohorts/, unioned (see macros/cohorts.sql).
    A definition may read the models below; one that reads another model needs
    a matching `depends_on` line here (dbt says which when it stops).
#}
-- depends_on: {{ ref('customers') }}
-- depends_on: {{ ref('int_invoices_aggregated') }}
-- depends_on: {{ ref('int_customer_country_spells') }}
-- depends_on: {{ ref('int_invoice_lines_summarized') }}
-- depends_on: {{ ref('stg_online_retail__invoice_lines') }}

with

definitions as (

    {{ cohort_union() }}

),

final as (

    select
        customer_id,
        cohort_name,
        cohort_key,
        entered_at,
        exited_at,
        cohort_model_name
    from definitions

)

select * from final
