{#
    Labels an amount with the band it falls in, from ascending upper limits:
    [100, 250] gives under_100, 100_to_250 and 250_and_over. A limit belongs
    to the band above it.
#}
{% macro amount_band(column_name, upper_limits) -%}
    case
        {%- for limit in upper_limits %}
            when {{ column_name }} < {{ limit }} then
            {%- if loop.first %} 'under_{{ limit }}'
            {%- else %} '{{ upper_limits[loop.index0 - 1] }}_to_{{ limit }}'
            {%- endif %}
        {%- endfor %}
        else '{{ upper_limits[-1] }}_and_over'
    end
{%- endmacro %}
