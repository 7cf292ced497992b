{#
    Post-hook on everything Metabase reads: select for the read-only role
    (var `metabase_reader_role`, created by create_python_tables). A hook rather
    than dbt's `grants` config because that config cannot read project vars.
#}
{% macro grant_select_to_reader(relation) -%}
    grant select on {{ relation }} to {{ adapter.quote(var('metabase_reader_role')) }}
{%- endmacro %}
