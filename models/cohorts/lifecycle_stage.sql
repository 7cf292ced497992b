{#
    Customers by lifecycle stage over time: new (first purchase less than
    var lifecycle_new_days ago), active (a purchase less than
    lifecycle_active_days ago), at_risk (less than lifecycle_lapsed_days ago)
    and lapsed. One row per stage spell, up to the last event in the data.
#}
with

invoices as (

    select
        customer_id,
        invoiced_at,
        is_order
    from {{ ref('int_invoices_aggregated') }}

),

orders as (

    select
        customer_id,
        invoiced_at
    from invoices
    where is_order

),

invoice_lines_summarized as (

    select last_invoiced_at
    from {{ ref('int_invoice_lines_summarized') }}

),

first_orders as (

    select
        customer_id,
        min(invoiced_at) as first_ordered_at
    from orders
    group by customer_id

),

change_points as (

    {# Every moment at which a customer's stage can change. #}
    select
        customer_id,
        invoiced_at as changed_at,
        invoiced_at as ordered_at
    from orders

    union all

    select
        customer_id,
        invoiced_at + interval '{{ var("lifecycle_active_days") }} days' as changed_at,
        null::timestamptz as ordered_at
    from orders

    union all

    select
        customer_id,
        invoiced_at + interval '{{ var("lifecycle_lapsed_days") }} days' as changed_at,
        null::timestamptz as ordered_at
    from orders

    union all

    select
        customer_id,
        first_ordered_at + interval '{{ var("lifecycle_new_days") }} days' as changed_at,
        null::timestamptz as ordered_at
    from first_orders

),

last_orders_at_change_points as (

    select distinct
        customer_id,
        changed_at,
        max(ordered_at) over (
            partition by customer_id
            order by changed_at
            range between unbounded preceding and current row
        ) as last_ordered_at
    from change_points

),

stages_at_change_points as (

    select
        last_orders_at_change_points.customer_id,
        last_orders_at_change_points.changed_at,
        case
            when
                last_orders_at_change_points.changed_at < first_orders.first_ordered_at
                + interval '{{ var("lifecycle_new_days") }} days'
                then 'new'
            when
                last_orders_at_change_points.changed_at
                < last_orders_at_change_points.last_ordered_at
                + interval '{{ var("lifecycle_active_days") }} days'
                then 'active'
            when
                last_orders_at_change_points.changed_at
                < last_orders_at_change_points.last_ordered_at
                + interval '{{ var("lifecycle_lapsed_days") }} days'
                then 'at_risk'
            else 'lapsed'
        end as lifecycle_stage
    from last_orders_at_change_points
    inner join first_orders
        on last_orders_at_change_points.customer_id = first_orders.customer_id
    cross join invoice_lines_summarized
    where
        last_orders_at_change_points.changed_at
        <= invoice_lines_summarized.last_invoiced_at

),

stage_changes as (

    select
        customer_id,
        changed_at,
        lifecycle_stage,
        coalesce(
            lag(lifecycle_stage) over (
                partition by customer_id order by changed_at
            ) <> lifecycle_stage,
            true
        ) as is_new_spell
    from stages_at_change_points

),

final as (

    select
        customer_id,
        'lifecycle_stage' as cohort_name,
        lifecycle_stage as cohort_key,
        changed_at as entered_at,
        lead(changed_at) over (
            partition by customer_id order by changed_at
        ) as exited_at
    from stage_changes
    where is_new_spell

)

select * from final
