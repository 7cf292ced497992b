{#
    The cohort registry. Every model tagged `cohort` (all of models/cohorts/ by
    folder config) is a cohort definition; `cohort_membership` unions them.

    dbt builds its DAG before it can read the graph, so the union cannot `ref`
    models it discovers. Instead it renders each definition's SQL in place, at
    run time. That keeps the union correct whatever order dbt runs the cohort
    views in, and adding a cohort stays one file. See docs/dbt.md.
#}

{# The cohort definition nodes, sorted by name; empty while dbt parses. #}
{% macro cohort_nodes() %}
    {% set found = [] %}
    {% if execute %}
        {% for node in graph.get('nodes', {}).values() | sort(attribute='name') %}
            {% if node.resource_type == 'model'
                and 'cohort' in node.tags
                and node.package_name == project_name
                and node.name != 'cohort_membership'
                and node.config.enabled %}
                {% do found.append(node) %}
            {% endif %}
        {% endfor %}
    {% endif %}
    {{ return(found) }}
{% endmacro %}


{# The union of every cohort definition, typed to the contract. #}
{% macro cohort_union() %}
    {%- set nodes = cohort_nodes() -%}
    {%- if execute and flags.WHICH in ['run', 'build'] -%}
        {%- do check_cohort_columns(nodes) -%}
    {%- endif -%}
    {%- for node in nodes %}
    select
        definition.customer_id::text as customer_id,
        definition.cohort_name::text as cohort_name,
        definition.cohort_key::text as cohort_key,
        definition.entered_at::timestamptz as entered_at,
        definition.exited_at::timestamptz as exited_at,
        '{{ node.name }}'::text as cohort_model_name
    from (
        {{ render(node.raw_code) | trim | trim(';') }}
    ) as definition
    {% if not loop.last %}union all{% endif %}
    {%- else %}
    select
        null::text as customer_id,
        null::text as cohort_name,
        null::text as cohort_key,
        null::timestamptz as entered_at,
        null::timestamptz as exited_at,
        null::text as cohort_model_name
    where false
    {%- endfor %}
{% endmacro %}


{# Fails the build when a cohort definition lacks a contract column. #}
{% macro check_cohort_columns(nodes) %}
    {% set contract_columns = [
        'customer_id', 'cohort_name', 'cohort_key', 'entered_at', 'exited_at'
    ] %}
    {% set problems = [] %}
    {% for node in nodes %}
        {% set probe = run_query(
            'select * from (' ~ (render(node.raw_code) | trim | trim(';'))
            ~ ') as definition limit 0'
        ) %}
        {% set columns = probe.column_names | map('lower') | list %}
        {% for column in contract_columns %}
            {% if column not in columns %}
                {% do problems.append(
                    "cohort model '" ~ node.name ~ "' breaks the cohort contract: "
                    ~ "rule 'has every contract column': it has no column "
                    ~ column
                ) %}
            {% endif %}
        {% endfor %}
    {% endfor %}
    {% if problems %}
        {% do exceptions.raise_compiler_error(problems | join('\n')) %}
    {% endif %}
{% endmacro %}


{#
    Post-hook of cohort_membership: checks the built rows against the contract
    and fails the build naming each offending model and rule.
#}
{% macro check_cohort_contract(relation) %}
    {% if execute %}
        {# Models whose members may hold several keys at once (meta flag). #}
        {% set overlapping_models = ["''"] %}
        {% for node in cohort_nodes() %}
            {% if node.config.meta.get('cohort_keys_may_overlap') %}
                {% do overlapping_models.append("'" ~ node.name ~ "'") %}
            {% endif %}
        {% endfor %}
        {% set violations_sql %}
            with

            membership as (

                select
                    cohort_model_name,
                    customer_id,
                    cohort_name,
                    cohort_key,
                    entered_at,
                    exited_at
                from {{ relation }}

            ),

            ordered_spells as (

                select
                    cohort_model_name,
                    customer_id,
                    entered_at,
                    lag(coalesce(exited_at, 'infinity'::timestamptz)) over (
                        partition by
                            cohort_model_name,
                            customer_id,
                            case
                                when cohort_model_name in ({{ overlapping_models | join(', ') }})
                                    then cohort_key
                            end
                        order by entered_at
                    ) as previous_exited_at
                from membership
                where customer_id is not null and entered_at is not null

            ),

            violations as (

                select
                    cohort_model_name,
                    'customer_id, cohort_name, cohort_key and entered_at are never null'
                        as rule_name,
                    customer_id
                from membership
                where
                    customer_id is null
                    or cohort_name is null
                    or cohort_key is null
                    or entered_at is null

                union all

                select
                    cohort_model_name,
                    'cohort_name equals the model name' as rule_name,
                    customer_id
                from membership
                where cohort_name is distinct from cohort_model_name

                union all

                select
                    cohort_model_name,
                    'exited_at is later than entered_at' as rule_name,
                    customer_id
                from membership
                where exited_at <= entered_at

                union all

                select
                    cohort_model_name,
                    'a customer is in the cohort at most once at a time'
                    || ' (in one key at a time unless meta cohort_keys_may_overlap)'
                        as rule_name,
                    customer_id
                from ordered_spells
                where previous_exited_at > entered_at

            )

            select
                cohort_model_name,
                rule_name,
                count(*) as violation_count,
                min(customer_id) as example_customer_id
            from violations
            group by cohort_model_name, rule_name
            order by cohort_model_name, rule_name
        {% endset %}
        {% set violations = run_query(violations_sql) %}
        {% if violations.rows | length > 0 %}
            {% set messages = [] %}
            {% for row in violations.rows %}
                {% do messages.append(
                    "cohort model '" ~ row[0] ~ "' breaks the cohort contract: rule '"
                    ~ row[1] ~ "' fails on " ~ row[2] ~ " row(s), e.g. customer "
                    ~ row[3]
                ) %}
            {% endfor %}
            {% do exceptions.raise_compiler_error(messages | join('\n')) %}
        {% endif %}
    {% endif %}
{% endmacro %}
