{#
    True when a stock code is not a product (postage, fees, manual lines,
    discounts, vouchers, ...). The codes live in one place: the vars
    `non_product_stock_codes` (exact) and `non_product_stock_code_prefixes`.
#}
{% macro is_non_product_stock_code(column_name) -%}
    (
        {{ column_name }} in (
            {%- for code in var('non_product_stock_codes') %}
            '{{ code }}'{{ "," if not loop.last }}
            {%- endfor %}
        )
        {%- for prefix in var('non_product_stock_code_prefixes') %}
        or starts_with({{ column_name }}, '{{ prefix }}')
        {%- endfor %}
    )
{%- endmacro %}
