{#
    The order-history measures of a group of invoices (from int_invoices_aggregated
    columns), one definition for the lifetime measures in `customers` and the
    point-in-time ones in `customer_feature_snapshots`. Use inside a select list,
    after a comma, before a group by.
#}
{% macro order_history_measures() %}
    min(invoiced_at) filter (where is_order) as first_ordered_at,
    max(invoiced_at) filter (where is_order) as last_ordered_at,
    count(*) filter (where is_order) as order_count,
    count(*) filter (where is_cancellation) as cancellation_count,
    coalesce(
        sum(product_amount) filter (where is_order), 0
    ) as gross_revenue_amount,
    coalesce(
        -sum(product_amount) filter (where is_cancellation), 0
    ) as cancelled_amount
{%- endmacro %}
