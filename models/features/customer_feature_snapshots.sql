{#
    One row per customer per monthly as_of_date (the first of each month, from
    the month after the data starts to the month of the last event), for
    customers whose first purchase came before it. Features use only events
    strictly before as_of_date; the label `is_churned` uses only the
    `churn_window_days` from it, and is null until that window is observed.
    Each cohort adds a `cohort_<name>` column: the key the customer held in
    that cohort at as_of_date.
#}
with

customers as (

    select
        customer_id,
        first_ordered_at
    from {{ ref('customers') }}
    where first_ordered_at is not null

),

invoices as (

    select
        customer_id,
        invoiced_at,
        is_order,
        is_cancellation,
        product_amount,
        item_quantity
    from {{ ref('int_invoices_aggregated') }}

),

invoice_lines_summarized as (

    select
        first_invoiced_at,
        last_invoiced_at
    from {{ ref('int_invoice_lines_summarized') }}

),

cohort_membership as (

    select
        customer_id,
        cohort_name,
        cohort_key,
        entered_at,
        exited_at
    from {{ ref('cohort_membership') }}

),

data_bounds as (

    select
        {{ utc_date("date_trunc('month', first_invoiced_at, 'UTC')") }}
            as first_event_month,
        {{ utc_date("date_trunc('month', last_invoiced_at, 'UTC')") }}
            as last_event_month,
        {{ utc_date('last_invoiced_at') }} as last_event_date
    from invoice_lines_summarized

),

snapshot_dates as (

    select
        month_starts.month_start::date as as_of_date,
        {{ utc_midnight('month_starts.month_start::date') }} as as_of_at,
        month_starts.month_start::date + {{ var('churn_window_days') }}
        <= data_bounds.last_event_date as is_label_observed
    from data_bounds
    cross join lateral generate_series(
        (data_bounds.first_event_month + interval '1 month')::timestamp,
        data_bounds.last_event_month::timestamp,
        interval '1 month'
    ) as month_starts (month_start)

),

customer_snapshots as (

    select
        customers.customer_id,
        snapshot_dates.as_of_date,
        snapshot_dates.as_of_at,
        snapshot_dates.is_label_observed
    from customers
    inner join snapshot_dates
        on customers.first_ordered_at < snapshot_dates.as_of_at

),

events_before_snapshot as (

    select
        customer_snapshots.customer_id,
        customer_snapshots.as_of_date,
        invoices.invoiced_at,
        invoices.is_order,
        invoices.is_cancellation,
        invoices.product_amount,
        invoices.item_quantity,
        customer_snapshots.as_of_at - invoices.invoiced_at as time_before_as_of
    from customer_snapshots
    inner join invoices
        on
            customer_snapshots.customer_id = invoices.customer_id
            and customer_snapshots.as_of_at > invoices.invoiced_at

),

history_per_snapshot as (

    select
        customer_id,
        as_of_date,
        {{ order_history_measures() }},
        {%- for window_days in var('activity_window_days') %}
            count(*) filter (
                where is_order and time_before_as_of <= interval '{{ window_days }} days'
            ) as order_count_last_{{ window_days }}_days,
            coalesce(sum(product_amount) filter (
                where is_order and time_before_as_of <= interval '{{ window_days }} days'
            ), 0) as revenue_amount_last_{{ window_days }}_days,
        {%- endfor %}
        coalesce(sum(item_quantity) filter (where is_order), 0) as item_quantity
    from events_before_snapshot
    group by customer_id, as_of_date

),

future_orders_per_snapshot as (

    select
        customer_snapshots.customer_id,
        customer_snapshots.as_of_date,
        count(*) as future_order_count
    from customer_snapshots
    inner join invoices
        on
            customer_snapshots.customer_id = invoices.customer_id
            and invoices.is_order
            and customer_snapshots.as_of_at <= invoices.invoiced_at
            and customer_snapshots.as_of_at
            + interval '{{ var("churn_window_days") }} days' > invoices.invoiced_at
    group by customer_snapshots.customer_id, customer_snapshots.as_of_date

),

cohort_keys_per_snapshot as (

    select
        {%- for node in cohort_nodes() %}
            max(cohort_membership.cohort_key) filter (
                where cohort_membership.cohort_name = '{{ node.name }}'
            ) as cohort_{{ node.name }},
        {%- endfor %}
        customer_snapshots.customer_id,
        customer_snapshots.as_of_date
    from customer_snapshots
    left join cohort_membership
        on
            customer_snapshots.customer_id = cohort_membership.customer_id
            and customer_snapshots.as_of_at > cohort_membership.entered_at
            and customer_snapshots.as_of_at
            <= coalesce(cohort_membership.exited_at, 'infinity')
    group by customer_snapshots.customer_id, customer_snapshots.as_of_date

),

final as (

    select
        customer_snapshots.customer_id,
        customer_snapshots.as_of_date,
        history_per_snapshot.first_ordered_at,
        history_per_snapshot.last_ordered_at,
        history_per_snapshot.order_count,
        history_per_snapshot.cancellation_count,
        customer_snapshots.as_of_date
        - {{ utc_date('history_per_snapshot.last_ordered_at') }}
            as days_since_last_order,
        customer_snapshots.as_of_date
        - {{ utc_date('history_per_snapshot.first_ordered_at') }}
            as tenure_days,
        history_per_snapshot.gross_revenue_amount,
        history_per_snapshot.cancelled_amount,
        history_per_snapshot.gross_revenue_amount
        - history_per_snapshot.cancelled_amount as net_revenue_amount,
        history_per_snapshot.gross_revenue_amount
        / history_per_snapshot.order_count::numeric as average_order_amount,
        history_per_snapshot.item_quantity,
        {%- for window_days in var('activity_window_days') %}
            history_per_snapshot.order_count_last_{{ window_days }}_days,
            history_per_snapshot.revenue_amount_last_{{ window_days }}_days,
        {%- endfor %}
        {%- for node in cohort_nodes() %}
            cohort_keys_per_snapshot.cohort_{{ node.name }},
        {%- endfor %}
        customer_snapshots.is_label_observed,
        case
            when customer_snapshots.is_label_observed
                then coalesce(future_orders_per_snapshot.future_order_count, 0) = 0
        end as is_churned
    from customer_snapshots
    inner join history_per_snapshot
        on
            customer_snapshots.customer_id = history_per_snapshot.customer_id
            and customer_snapshots.as_of_date = history_per_snapshot.as_of_date
    left join future_orders_per_snapshot
        on
            customer_snapshots.customer_id = future_orders_per_snapshot.customer_id
            and customer_snapshots.as_of_date = future_orders_per_snapshot.as_of_date
    left join cohort_keys_per_snapshot
        on
            customer_snapshots.customer_id = cohort_keys_per_snapshot.customer_id
            and customer_snapshots.as_of_date = cohort_keys_per_snapshot.as_of_date

)

select * from final
