{#
    Fails on every row where the boolean SQL expression is false or null
    (optionally only among rows matching `where`).
#}
{% test expression_is_true(model, expression, where_condition='true') %}

select *
from {{ model }}
where
    ({{ where_condition }})
    and not coalesce(({{ expression }}), false)

{% endtest %}
