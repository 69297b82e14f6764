"""The in-spec rule, defined once: lower ≤ value ≤ upper, closed, a missing limit unbounded.

Both the results' ``yield`` and the ``in_spec`` flag of each listed measurement read it from
here (docs/results.md §3).
"""

from django.db.models import BooleanField, Case, F, Q, Value, When


def in_spec_condition(prefix: str = "metric__") -> Q:
    """The condition on a measurement row; ``prefix`` leads from the row to its metric."""
    above_lower = Q(**{f"{prefix}lower_limit__isnull": True}) | Q(
        value__gte=F(f"{prefix}lower_limit")
    )
    below_upper = Q(**{f"{prefix}upper_limit__isnull": True}) | Q(
        value__lte=F(f"{prefix}upper_limit")
    )
    return above_lower & below_upper


def in_spec_sql(value: str, lower: str, upper: str) -> str:
    """The same rule as SQL over column expressions, for the analyses' hand-written joins."""
    return (
        f"(({lower}) IS NULL OR ({value}) >= ({lower})) "
        f"AND (({upper}) IS NULL OR ({value}) <= ({upper}))"
    )


def no_limits_condition(prefix: str = "metric__") -> Q:
    return Q(**{f"{prefix}lower_limit__isnull": True, f"{prefix}upper_limit__isnull": True})


# Per measurement: True/False against the metric's limits; null when the metric has no limit.
IN_SPEC = Case(
    When(no_limits_condition(), then=Value(None)),
    When(in_spec_condition(), then=Value(True)),
    default=Value(False),
    output_field=BooleanField(null=True),
)
