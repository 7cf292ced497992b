{{ config(materialized='table', meta={'cohort_keys_may_overlap': true}) }}
{#
    One cohort key per saved question imported from Metabase (`cohortcast
    metabase import-cohort --name NAME` writes raw.metabase_cohort_<name>):
    the key is the import's name, plus ":<key>" when the question had its own
    cohort_key column. The tables are found at run time, not declared. A
    customer may be in several imports at once. A table, not a view, so that
    a new import can replace its raw table without a view depending on it.
#}
{%- set table_prefix = 'metabase_cohort_' -%}
{%- set import_tables = [] -%}
{%- if execute and flags.WHICH in ['run', 'build'] -%}
    {%- set found = run_query(
        "select table_name from information_schema.tables"
        ~ " where table_schema = 'raw'"
        ~ " and table_name like '" ~ (table_prefix | replace('_', '\\_')) ~ "%'"
        ~ " order by table_name"
    ) -%}
    {%- set import_tables = found.columns[0].values() -%}
{%- endif -%}
with

imports as (

    {% for table_name in import_tables -%}
        {%- set import_name = table_name[(table_prefix | length):] %}
        select
            customer_id,
            'metabase_imports' as cohort_name,
            case
                when cohort_key = '{{ import_name }}' then cohort_key
                else '{{ import_name }}:' || cohort_key
            end as cohort_key,
            entered_at,
            null::timestamptz as exited_at
        from raw.{{ table_name }}
        {% if not loop.last %}union all{% endif %}
    {% else %}
        select
            null::text as customer_id,
            null::text as cohort_name,
            null::text as cohort_key,
            null::timestamptz as entered_at,
            null::timestamptz as exited_at
        where false
    {% endfor %}

)

select * from imports
