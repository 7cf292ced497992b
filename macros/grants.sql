{#
    Post-hook on everything Metabase reads: select for the read-only role
    (var `metabase_reader_role`, created by create_python_tables). A hook rather
    than dbt's `grants` config because that config cannot read project vars.
    Skipped when the role does not exist (the user could not create it).
#}
{% macro grant_select_to_reader(relation) -%}
    {{ grant_to_reader("select on " ~ relation) }}
{%- endmacro %}


{# Grants a privilege (`select on <relation>`, ...) to the reader role, if it exists. #}
{% macro grant_to_reader(privilege) -%}
    {%- set role_name = var('metabase_reader_role') -%}
    do $$
    begin
        if exists (select from pg_catalog.pg_roles where rolname = '{{ role_name }}') then
            execute 'grant {{ privilege | replace("'", "''") }} to {{ adapter.quote(role_name) }}';
        end if;
    end
    $$
{%- endmacro %}
