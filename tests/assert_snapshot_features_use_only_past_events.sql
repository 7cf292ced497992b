{#
    Point in time: no feature of customer_feature_snapshots may use an event on
    or after its as_of_date. order_count and days_since_last_order are
    recomputed here straight from the staging lines (not through the
    intermediate models the snapshot uses) for a deterministic sample of
    snapshots, and every difference is a failing row.

    The sample is every snapshot of one customer in sixteen (by the md5 of the
    id), plus every snapshot whose customer bought within a day either side of
    its as_of_date: a leak shows first at that boundary.
#}
with

customer_feature_snapshots as (

    select
        customer_id,
        as_of_date,
        order_count,
        days_since_last_order
    from {{ ref('customer_feature_snapshots') }}

),

invoice_lines as (

    select
        invoice_id,
        customer_id,
        invoiced_at
    from {{ ref('stg_online_retail__invoice_lines') }}
    where is_purchase

),

orders as (

    {# An order is an invoice with purchase lines, placed at its first one. #}
    select
        customer_id,
        invoice_id,
        min(invoiced_at) as ordered_at
    from invoice_lines
    group by customer_id, invoice_id

),

sample_rules as (

    select
        -- Customers whose id's md5 starts with this are sampled whole: 1 in 16.
        '0' as sampled_md5_prefix,
        -- Snapshots with a purchase this close to as_of_date are all sampled.
        interval '1 day' as boundary_width

),

snapshots as (

    select
        customer_feature_snapshots.customer_id,
        customer_feature_snapshots.as_of_date,
        customer_feature_snapshots.order_count,
        customer_feature_snapshots.days_since_last_order,
        {{ utc_midnight('customer_feature_snapshots.as_of_date') }} as as_of_at
    from customer_feature_snapshots

),

sampled_by_customer as (

    select
        snapshots.customer_id,
        snapshots.as_of_date,
        snapshots.as_of_at
    from snapshots
    cross join sample_rules
    where
        starts_with(
            md5(snapshots.customer_id), sample_rules.sampled_md5_prefix
        )

),

sampled_at_boundary as (

    select distinct
        snapshots.customer_id,
        snapshots.as_of_date,
        snapshots.as_of_at
    from snapshots
    cross join sample_rules
    inner join orders
        on
            snapshots.customer_id = orders.customer_id
            and orders.ordered_at >= snapshots.as_of_at - sample_rules.boundary_width
            and orders.ordered_at < snapshots.as_of_at + sample_rules.boundary_width

),

sampled_snapshots as (

    select
        customer_id,
        as_of_date,
        as_of_at
    from sampled_by_customer
    union
    select
        customer_id,
        as_of_date,
        as_of_at
    from sampled_at_boundary

),

recomputed as (

    select
        sampled_snapshots.customer_id,
        sampled_snapshots.as_of_date,
        count(orders.invoice_id) as expected_order_count,
        sampled_snapshots.as_of_date
        - {{ utc_date('max(orders.ordered_at)') }}
            as expected_days_since_last_order
    from sampled_snapshots
    left join orders
        on
            sampled_snapshots.customer_id = orders.customer_id
            and sampled_snapshots.as_of_at > orders.ordered_at
    group by sampled_snapshots.customer_id, sampled_snapshots.as_of_date

),

final as (

    select
        snapshots.customer_id,
        snapshots.as_of_date,
        snapshots.order_count,
        recomputed.expected_order_count,
        snapshots.days_since_last_order,
        recomputed.expected_days_since_last_order
    from recomputed
    inner join snapshots
        on
            recomputed.customer_id = snapshots.customer_id
            and recomputed.as_of_date = snapshots.as_of_date
    where
        snapshots.order_count is distinct from recomputed.expected_order_count
        or snapshots.days_since_last_order
        is distinct from recomputed.expected_days_since_last_order

)

select * from final
