{#
    Time helpers. Every timestamp the models store is timestamptz; these make
    the zone explicit so that results do not depend on the session time zone.
#}

{# A naive source timestamp, read as local time in the source's zone. #}
{% macro source_local_to_utc(column_name) -%}
    ({{ column_name }} at time zone '{{ var("source_time_zone") }}')
{%- endmacro %}


{# Start of the UTC period (`month`, `week`, `quarter`, ...) holding a timestamptz. #}
{% macro utc_period_start(grain, column_name) -%}
    date_trunc('{{ grain }}', {{ column_name }}, 'UTC')
{%- endmacro %}


{# The UTC calendar date of a timestamptz. #}
{% macro utc_date(column_name) -%}
    ({{ column_name }} at time zone 'UTC')::date
{%- endmacro %}


{# Midnight UTC at the start of a date, as timestamptz. #}
{% macro utc_midnight(column_name) -%}
    ({{ column_name }}::timestamp at time zone 'UTC')
{%- endmacro %}
