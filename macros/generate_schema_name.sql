{#
    Exact schema names, not dbt's default `<target schema>_<custom>`:
    a model with `+schema: staging` lands in `staging`; everything else in
    the target schema (`analytics` in profiles.example.yml).
#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema | trim }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
