{#
    The DDL of every table that Python writes (schemas `ml` and `quality`), plus
    the raw demo table and the Metabase read-only role. This is the single home
    of the contract in docs/contracts.md. It runs `on-run-start` of every dbt
    invocation and through `dbt run-operation create_python_tables`, so each
    statement is `if not exists`: it never drops or alters data.
#}
{% macro create_python_tables() %}
    {% set statements = [
        "create schema if not exists raw",
        "create schema if not exists staging",
        "create schema if not exists " ~ target.schema,
        "create schema if not exists ml",
        "create schema if not exists quality",
        create_raw_online_retail_lines(),
        "create table if not exists ml.customer_churn_predictions (
            customer_id text not null primary key,
            as_of_date date not null,
            churn_probability double precision not null
                check (churn_probability between 0 and 1),
            risk_band text not null check (risk_band in ('low', 'medium', 'high')),
            model_run_id text not null,
            scored_at timestamptz not null,
            top_driver_1 text,
            top_driver_2 text,
            top_driver_3 text
        )",
        "create table if not exists ml.customer_churn_prediction_history (
            customer_id text not null,
            as_of_date date not null,
            churn_probability double precision not null
                check (churn_probability between 0 and 1),
            risk_band text not null check (risk_band in ('low', 'medium', 'high')),
            model_run_id text not null,
            scored_at timestamptz not null,
            top_driver_1 text,
            top_driver_2 text,
            top_driver_3 text,
            primary key (model_run_id, customer_id)
        )",
        "create table if not exists ml.model_runs (
            run_id text not null primary key,
            target text,
            model_name text,
            status text check (status in ('candidate', 'published', 'retired')),
            trained_at timestamptz,
            training_window_start date,
            training_window_end date,
            holdout_as_of_date date,
            snapshot_count integer,
            training_row_count integer,
            feature_list jsonb,
            feature_hash text,
            parameters jsonb,
            library_versions jsonb,
            dbt_invocation_id text,
            artifact_path text,
            artifact_sha256 text,
            roc_auc double precision,
            pr_auc double precision,
            brier_score double precision,
            log_loss double precision,
            base_rate double precision,
            metrics jsonb
        )",
        "create table if not exists ml.model_evaluations (
            run_id text not null,
            cutoff_date date,
            model text,
            cohort_slice text,
            metric text,
            value double precision,
            row_count integer
        )",
        "create table if not exists ml.model_calibration (
            run_id text not null,
            model text,
            decile integer check (decile between 1 and 10),
            row_count integer,
            mean_predicted double precision,
            observed_rate double precision
        )",
        "create table if not exists ml.feature_drift (
            run_id text not null,
            feature text,
            psi double precision,
            is_drifted boolean,
            reference_as_of_date date,
            scored_as_of_date date
        )",
        "create table if not exists quality.validation_runs (
            validation_run_id text not null primary key,
            pipeline_step text,
            started_at timestamptz,
            success boolean,
            blocking_failures integer,
            warnings integer,
            data_docs_path text
        )",
        "create table if not exists quality.validation_results (
            validation_run_id text not null,
            table_name text,
            expectation text,
            column_name text,
            success boolean,
            severity text check (severity in ('blocking', 'warning')),
            observed_value text,
            failing_examples text,
            checked_at timestamptz
        )",
        create_metabase_reader_role(),
        grant_to_reader("usage on schema " ~ target.schema),
    ] %}
    {% for statement in statements %}
        {% do run_query(statement) %}
    {% endfor %}
    {% if flags.WHICH == 'run-operation' %}
        {% do run_query('commit') %}
        {{ log("Created the ml, quality and raw tables that were missing.", info=true) }}
    {% endif %}
{% endmacro %}


{% macro create_raw_online_retail_lines() %}
    create table if not exists raw.online_retail_lines (
        source_line_number bigint generated always as identity not null,
        invoice_no text not null,
        stock_code text not null,
        description text,
        quantity integer not null,
        invoice_date timestamp not null,
        unit_price numeric not null,
        customer_id text,
        country text not null,
        loaded_at timestamptz not null default now()
    )
{% endmacro %}


{#
    Creates the read-only role Metabase connects as, when missing. It cannot
    log in until someone gives it a password (or grants it to a login role).
    A user without the right to create roles gets a warning, and the grants
    to the role are skipped (see grant_select_to_reader).
#}
{% macro create_metabase_reader_role() %}
    do $$
    begin
        if not exists (
            select from pg_catalog.pg_roles
            where rolname = '{{ var("metabase_reader_role") }}'
        ) then
            create role {{ adapter.quote(var("metabase_reader_role")) }} nologin;
        end if;
    exception
        when duplicate_object or unique_violation then null;
        when insufficient_privilege then
            raise warning 'cannot create role {{ var("metabase_reader_role") }}: %', sqlerrm;
    end
    $$
{% endmacro %}
