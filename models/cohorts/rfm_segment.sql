{#
    Customers by RFM segment as of the last event in the data. Recency,
    frequency and monetary (net product revenue) are each scored 1-5 by
    quintile (var rfm_score_count), 5 best; frequency and monetary are
    averaged. champions: R and FM >= 4; loyal: both >= 3; promising: R >= 4;
    needs_attention: R <= 2 and FM >= 3; hibernating: everyone else.
#}
with

customers as (

    select
        customer_id,
        last_ordered_at,
        order_count,
        net_revenue_amount
    from {{ ref('customers') }}
    where first_ordered_at is not null

),

invoice_lines_summarized as (

    select last_invoiced_at
    from {{ ref('int_invoice_lines_summarized') }}

),

measures as (

    select
        customers.customer_id,
        invoice_lines_summarized.last_invoiced_at as last_event_at,
        {{ utc_date('invoice_lines_summarized.last_invoiced_at') }}
        - {{ utc_date('customers.last_ordered_at') }} as recency_days,
        customers.order_count,
        customers.net_revenue_amount
    from customers
    cross join invoice_lines_summarized

),

ranked as (

    {# Rank 1 is the worst; ties share a rank, so they share a score. #}
    select
        customer_id,
        last_event_at,
        rank() over (order by recency_days desc) - 1 as recency_rank,
        rank() over (order by order_count) - 1 as frequency_rank,
        rank() over (order by net_revenue_amount) - 1 as monetary_rank,
        count(*) over () as customer_count
    from measures

),

scored as (

    select
        customer_id,
        last_event_at,
        1 + floor(
            {{ var('rfm_score_count') }} * recency_rank::numeric / customer_count
        ) as recency_score,
        1 + floor(
            {{ var('rfm_score_count') }} * frequency_rank::numeric / customer_count
        ) as frequency_score,
        1 + floor(
            {{ var('rfm_score_count') }} * monetary_rank::numeric / customer_count
        ) as monetary_score
    from ranked

),

segmented as (

    select
        customer_id,
        last_event_at,
        case
            when
                recency_score >= 4
                and (frequency_score + monetary_score) / 2.0 >= 4
                then 'champions'
            when
                recency_score >= 3
                and (frequency_score + monetary_score) / 2.0 >= 3
                then 'loyal'
            when recency_score >= 4 then 'promising'
            when (frequency_score + monetary_score) / 2.0 >= 3 then 'needs_attention'
            else 'hibernating'
        end as rfm_segment
    from scored

),

final as (

    select
        customer_id,
        'rfm_segment' as cohort_name,
        rfm_segment as cohort_key,
        last_event_at as entered_at,
        null::timestamptz as exited_at
    from segmented

)

select * from final
