{#
    Fails on every combination of the given columns that occurs more than
    once. Use for compound keys.
#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

with

combinations as (

    select
        {{ combination_of_columns | join(',\n        ') }},
        count(*) as occurrence_count
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}

)

select * from combinations
where occurrence_count > 1

{% endtest %}
