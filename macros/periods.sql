{#
    Period arithmetic on UTC dates, for the grains retention supports.
    `period_grain` is a SQL expression yielding 'month' or 'week'.
#}

{# Whole periods from one period-start date to another. #}
{% macro periods_between(period_grain, start_date, end_date) -%}
    case {{ period_grain }}
        when 'month' then
            (
                (extract(year from {{ end_date }}) - extract(year from {{ start_date }}))
                * 12
                + extract(month from {{ end_date }})
                - extract(month from {{ start_date }})
            )::integer
        when 'week' then ({{ end_date }} - {{ start_date }}) / 7
    end
{%- endmacro %}


{# The date a number of periods after a period-start date. #}
{% macro add_periods(period_grain, start_date, period_count) -%}
    (
        {{ start_date }}
        + case {{ period_grain }}
            when 'month' then make_interval(months => {{ period_count }})
            when 'week' then make_interval(weeks => {{ period_count }})
        end
    )::date
{%- endmacro %}
