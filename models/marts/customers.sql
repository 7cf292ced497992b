{#
    One row per customer seen on any invoice line. `country` is the country of
    the customer's latest line (their current country spell); customers whose
    only lines are cancellations have no first order and no acquisition cohort.
#}
with

invoices as (

    select
        invoice_id,
        customer_id,
        invoiced_at,
        is_order,
        is_cancellation,
        product_amount,
        item_quantity
    from {{ ref('int_invoices_aggregated') }}

),

country_spells as (

    select
        customer_id,
        country,
        spell_number,
        started_at,
        ended_at
    from {{ ref('int_customer_country_spells') }}

),

first_orders as (

    select distinct on (customer_id)
        customer_id,
        invoice_id as first_order_id,
        product_amount as first_order_amount
    from invoices
    where is_order
    order by customer_id, invoiced_at, invoice_id

),

invoices_per_customer as (

    select
        customer_id,
        min(invoiced_at) as first_seen_at,
        {{ order_history_measures() }},
        coalesce(
            sum(item_quantity) filter (where is_order), 0
        )::bigint as item_quantity
    from invoices
    group by customer_id

),

countries_per_customer as (

    select
        customer_id,
        count(distinct country) as country_count,
        max(spell_number) as country_spell_count
    from country_spells
    group by customer_id

),

current_countries as (

    select
        customer_id,
        country
    from country_spells
    where ended_at is null

),

final as (

    select
        invoices_per_customer.customer_id,
        current_countries.country,
        countries_per_customer.country_count,
        invoices_per_customer.first_seen_at,
        invoices_per_customer.first_ordered_at,
        invoices_per_customer.last_ordered_at,
        first_orders.first_order_id,
        coalesce(first_orders.first_order_amount, 0) as first_order_amount,
        invoices_per_customer.order_count,
        invoices_per_customer.cancellation_count,
        invoices_per_customer.gross_revenue_amount,
        invoices_per_customer.cancelled_amount,
        invoices_per_customer.gross_revenue_amount
        - invoices_per_customer.cancelled_amount as net_revenue_amount,
        invoices_per_customer.item_quantity,
        invoices_per_customer.gross_revenue_amount
        / nullif(invoices_per_customer.order_count, 0)::numeric
            as average_order_amount,
        invoices_per_customer.order_count > 0 as has_ordered
    from invoices_per_customer
    left join current_countries
        on invoices_per_customer.customer_id = current_countries.customer_id
    left join countries_per_customer
        on invoices_per_customer.customer_id = countries_per_customer.customer_id
    left join first_orders
        on invoices_per_customer.customer_id = first_orders.customer_id

)

select * from final
