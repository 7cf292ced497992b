{#
    One row per cohort (cohort_name x cohort_key) per period grain (month,
    week) per period since entry. Period 0 is the period a member entered in
    and counts every member; from period 1 a member is retained when they
    ordered in that period. A customer who enters the same cohort key twice is
    followed from their first entry.
#}
with

cohort_membership as (

    select
        customer_id,
        cohort_name,
        cohort_key,
        entered_at
    from {{ ref('cohort_membership') }}

),

invoices as (

    select
        customer_id,
        invoiced_at,
        product_amount
    from {{ ref('int_invoices_aggregated') }}
    where is_order

),

invoice_lines_summarized as (

    select last_invoiced_at
    from {{ ref('int_invoice_lines_summarized') }}

),

period_grains as (

    {% for period_grain in var('retention_period_grains') -%}
        select '{{ period_grain }}'::text as period_grain
        {% if not loop.last %}union all{% endif %}
    {% endfor %}

),

data_bounds as (

    select {{ utc_date('last_invoiced_at') }} as last_event_date
    from invoice_lines_summarized

),

first_entries as (

    select distinct on (cohort_name, cohort_key, customer_id)
        cohort_name,
        cohort_key,
        customer_id,
        entered_at
    from cohort_membership
    order by cohort_name, cohort_key, customer_id, entered_at

),

member_periods as (

    select
        first_entries.cohort_name,
        first_entries.cohort_key,
        first_entries.customer_id,
        first_entries.entered_at,
        period_grains.period_grain,
        {{ utc_date(
            "date_trunc(period_grains.period_grain, first_entries.entered_at, 'UTC')"
        ) }} as entry_period_date
    from first_entries
    cross join period_grains

),

cohort_sizes as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        count(*) as cohort_customer_count,
        min(entry_period_date) as first_entry_period_date,
        max(entry_period_date) as last_entry_period_date
    from member_periods
    group by cohort_name, cohort_key, period_grain

),

member_orders as (

    select
        member_periods.cohort_name,
        member_periods.cohort_key,
        member_periods.period_grain,
        member_periods.customer_id,
        {{ periods_between(
            'member_periods.period_grain',
            'member_periods.entry_period_date',
            utc_date(
                "date_trunc(member_periods.period_grain, invoices.invoiced_at, 'UTC')"
            ),
        ) }} as period_number,
        invoices.product_amount
    from member_periods
    inner join invoices
        on
            member_periods.customer_id = invoices.customer_id
            and member_periods.entered_at <= invoices.invoiced_at

),

orders_per_period as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number,
        count(distinct customer_id) as ordering_customer_count,
        count(*) as order_count,
        sum(product_amount) as revenue_amount
    from member_orders
    group by cohort_name, cohort_key, period_grain, period_number

),

period_spine as (

    select
        cohort_sizes.cohort_name,
        cohort_sizes.cohort_key,
        cohort_sizes.period_grain,
        cohort_sizes.cohort_customer_count,
        cohort_sizes.first_entry_period_date,
        cohort_sizes.last_entry_period_date,
        spine.period_number
    from cohort_sizes
    cross join data_bounds
    cross join lateral generate_series(
        0,
        {{ periods_between(
            'cohort_sizes.period_grain',
            'cohort_sizes.first_entry_period_date',
            utc_date(
                "date_trunc(cohort_sizes.period_grain, "
                ~ utc_midnight('data_bounds.last_event_date') ~ ", 'UTC')"
            ),
        ) }}
    ) as spine (period_number)

),

periods_counted as (

    select
        period_spine.cohort_name,
        period_spine.cohort_key,
        period_spine.period_grain,
        period_spine.period_number,
        period_spine.cohort_customer_count,
        case
            when period_spine.period_number = 0
                then period_spine.cohort_customer_count
            else coalesce(orders_per_period.ordering_customer_count, 0)
        end as retained_customer_count,
        coalesce(orders_per_period.order_count, 0) as order_count,
        coalesce(orders_per_period.revenue_amount, 0) as revenue_amount,
        {{ add_periods(
            'period_spine.period_grain',
            'period_spine.last_entry_period_date',
            'period_spine.period_number + 1',
        ) }} > data_bounds.last_event_date as is_partial_period
    from period_spine
    cross join data_bounds
    left join orders_per_period
        on
            period_spine.cohort_name = orders_per_period.cohort_name
            and period_spine.cohort_key = orders_per_period.cohort_key
            and period_spine.period_grain = orders_per_period.period_grain
            and period_spine.period_number = orders_per_period.period_number

),

final as (

    select
        cohort_name,
        cohort_key,
        period_grain,
        period_number,
        cohort_customer_count,
        retained_customer_count,
        retained_customer_count::double precision
        / cohort_customer_count as customer_retention_rate,
        order_count,
        order_count::double precision / nullif(
            first_value(order_count) over cohort_periods, 0
        ) as order_retention_rate,
        revenue_amount,
        revenue_amount::double precision / nullif(
            first_value(revenue_amount) over cohort_periods, 0
        )::double precision as revenue_retention_rate,
        is_partial_period
    from periods_counted
    window cohort_periods as (
        partition by cohort_name, cohort_key, period_grain
        order by period_number
    )

)

select * from final
