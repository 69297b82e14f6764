"""Lab's domain: products made of units, experiments on them, and what was measured.

The database enforces every rule it can (unique keys, status values, limits order,
weight and coverage ranges, one control per experiment); services turn the
resulting IntegrityError into a 409 or 400 with a useful message.
"""

import secrets

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from rules import vocabulary

# Field choices derived from rules.vocabulary, the one definition of these words.
Status = models.TextChoices("Status", [(status.name, status.value) for status in vocabulary.Status])
AssignmentSource = models.TextChoices(
    "AssignmentSource", [(reason.name, reason.value) for reason in vocabulary.ASSIGNMENT_SOURCES]
)


KEY_MAX_LENGTH = 64
UNIT_KEY_MAX_LENGTH = 128
NAME_MAX_LENGTH = 200


def new_salt() -> str:
    return secrets.token_hex(16)


def new_config_version() -> int:
    """A random 63-bit config version (docs/decide.md, "The config cache").

    Random rather than a counter: two databases (two deployments, a restored backup and
    the original) never reach the same (product id, version) by different histories, so
    a config cached under one can never be served to another.
    """
    return secrets.randbits(63)


def _status_check(model_name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(status__in=Status.values),
        name=f"{model_name}_status_valid",
        violation_error_message=(
            f"status must be {', '.join(Status.values[:-1])} or {Status.values[-1]}"
        ),
    )


class Product(models.Model):
    # No index of its own on the foreign keys below that a composite unique index already
    # leads with: it would be a write cost, and the plan a never-analyzed database picks.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, db_index=False)
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    # Replaced by a new random value in the same transaction as every write that changes
    # what decide answers; the database is the authority, Redis and worker memory only
    # cache it (lab.services.config_version).
    config_version = models.BigIntegerField(default=new_config_version, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="product_key_unique_per_user"),
            _status_check("product"),
        ]

    def __str__(self) -> str:
        return self.key


class Unit(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="units", db_index=False
    )
    key = models.CharField(max_length=UNIT_KEY_MAX_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)
    # What targeting conditions test (docs/decide.md, "Targeting"): validated by
    # rules.targeting.check_attributes at every way in. The database default lets raw
    # inserts (decide's, the benchmark seeder's) leave it out.
    attributes = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "key"], name="unit_key_unique_per_product"),
        ]

    def __str__(self) -> str:
        return self.key


class Step(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="steps", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    position = models.IntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "key"], name="step_key_unique_per_product"),
            _status_check("step"),
        ]
        ordering = ["position", "id"]

    def __str__(self) -> str:
        return self.key


class Layer(models.Model):
    """A hash space experiments share to be mutually exclusive (docs/decide.md, "Layers")."""

    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="layers", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    # Random at creation and never changed: a unit's position in the layer depends on it.
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "key"], name="layer_key_unique_per_product"),
            _status_check("layer"),
        ]

    def __str__(self) -> str:
        return self.key


class Experiment(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="experiments", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.PROTECT)
    coverage = models.FloatField(default=1.0)
    # Random at creation and never changed: it is what makes the bucketing of one
    # experiment independent of every other one (docs/decide-vectors.md).
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Targeting (docs/decide.md, "Targeting, schedules and layers"): conditions as the
    # admin API validated them, an optional [start_at, end_at) schedule, and an optional
    # slot [layer_start, layer_end) of a layer.
    conditions = models.JSONField(default=list, blank=True)
    start_at = models.DateTimeField(null=True, blank=True)
    end_at = models.DateTimeField(null=True, blank=True)
    layer = models.ForeignKey(
        Layer, null=True, blank=True, on_delete=models.PROTECT, related_name="experiments"
    )
    layer_start = models.FloatField(null=True, blank=True)
    layer_end = models.FloatField(null=True, blank=True)
    # Cluster randomization (docs/decide.md, "Randomizing by lot"): the name of the unit
    # attribute whose value is hashed instead of the unit key; null randomizes units.
    randomize_by = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "key"], name="experiment_key_unique_per_product"
            ),
            models.CheckConstraint(
                condition=Q(start_at__isnull=True)
                | Q(end_at__isnull=True)
                | Q(start_at__lt=F("end_at")),
                name="experiment_start_before_end",
                violation_error_message="start_at must be before end_at",
            ),
            models.CheckConstraint(
                condition=Q(layer__isnull=True, layer_start__isnull=True, layer_end__isnull=True)
                | Q(
                    layer__isnull=False,
                    layer_start__gte=0,
                    layer_start__lt=F("layer_end"),
                    layer_end__lte=1,
                ),
                name="experiment_layer_range_valid",
                violation_error_message="layer_range must be [start, end), 0 <= start < end <= 1",
            ),
            _status_check("experiment"),
            models.CheckConstraint(
                condition=Q(coverage__gte=0) & Q(coverage__lte=1),
                name="experiment_coverage_in_unit_interval",
                violation_error_message="coverage must be between 0 and 1",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class Variant(models.Model):
    experiment = models.ForeignKey(
        Experiment, on_delete=models.PROTECT, related_name="variants", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    weight = models.FloatField(default=1.0)
    is_control = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "key"], name="variant_key_unique_per_experiment"
            ),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(is_control=True),
                name="variant_one_control_per_experiment",
                violation_error_message="the experiment has a control variant already",
            ),
            _status_check("variant"),
            models.CheckConstraint(
                condition=Q(weight__gte=0),
                name="variant_weight_non_negative",
                violation_error_message="weight must be 0 or more",
            ),
        ]
        # Creation order is the bucketing order (docs/decide-vectors.md): ids grow with creation.
        ordering = ["id"]

    def __str__(self) -> str:
        return self.key


class Assignment(models.Model):
    experiment = models.ForeignKey(
        Experiment, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    unit = models.ForeignKey(
        Unit, on_delete=models.PROTECT, related_name="assignments", db_index=False
    )
    variant = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="assignments")
    source = models.CharField(max_length=16, choices=AssignmentSource.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "unit"], name="assignment_unique_per_experiment_unit"
            ),
            models.CheckConstraint(
                condition=Q(source__in=AssignmentSource.values), name="assignment_source_valid"
            ),
        ]
        indexes = [
            # The hot path reads a unit's assignments across experiments.
            models.Index(fields=["unit", "experiment"], name="assignment_unit_experiment"),
            models.Index(fields=["experiment", "variant"], name="assignment_experiment_variant"),
        ]


class Design(models.Model):
    """A two-level fractional factorial run on the line (docs/designs.md): its factors are
    experiments of the product, each unit (or lot) is hashed into one of its runs and gets the
    levels of that run in every factor. The generators are stored, not recomputed: a design's
    runs never change under it."""

    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="designs", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    runs = models.IntegerField()
    generators = models.JSONField(default=list, blank=True)
    # Random at creation and never changed: a unit's run depends on it.
    salt = models.CharField(max_length=64, default=new_salt, editable=False)
    randomize_by = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "key"], name="design_key_unique_per_product"
            ),
            _status_check("design"),
            models.CheckConstraint(
                # Written as ORs, not IN (4, 8, ...): Django's SQLite introspection splits a
                # table's SQL on ", " and fails on a one-character item such as 8.
                condition=Q(runs=4)
                | Q(runs=8)
                | Q(runs=16)
                | Q(runs=32)
                | Q(runs=64)
                | Q(runs=128),
                name="design_runs_power_of_two",
                violation_error_message="runs must be a power of two from 4 to 128",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class DesignFactor(models.Model):
    """Factor ``position`` (0 = A) of a design: an experiment and its two levels, the control
    (level 0, the −1 of the analysis) and the other variant (level 1). ``active`` is true while
    the design is not removed: an experiment is a factor of at most one active design."""

    design = models.ForeignKey(
        Design, on_delete=models.PROTECT, related_name="factors", db_index=False
    )
    experiment = models.ForeignKey(
        Experiment, on_delete=models.PROTECT, related_name="design_factors"
    )
    position = models.SmallIntegerField()
    low = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="+")
    high = models.ForeignKey(Variant, on_delete=models.PROTECT, related_name="+")
    active = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["design", "position"], name="design_factor_unique_position"
            ),
            models.UniqueConstraint(
                fields=["experiment"],
                condition=Q(active=True),
                name="design_factor_one_active_design_per_experiment",
                violation_error_message="the experiment is a factor of another design",
            ),
        ]
        ordering = ["position"]


class DesignUnit(models.Model):
    """A unit's stored levels in a design's factors, as one code (``lab.analysis.designs``,
    ``level_code``): two bits per factor, bit 2j for level 0 and 2j + 1 for level 1, both
    clear when the unit has no assignment in factor j or one in neither level.

    On PostgreSQL, triggers on the assignments keep it (migration 0012: every insert, update
    and delete of an assignment adds its bits and takes away the old ones, whoever writes it:
    decide, forcing, rebucketing) and creating a design fills it from the assignments that
    exist; the analysis then reads one row per unit instead of one per unit and factor
    (docs/designs.md, "Analysis"). SQLite has no such triggers: there the analysis computes
    the code from the assignments, and these rows are not written."""

    design = models.ForeignKey(Design, on_delete=models.CASCADE, related_name="+", db_index=False)
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, related_name="+", db_index=False)
    code = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["design", "unit"], name="design_unit_unique"),
        ]


class Metric(models.Model):
    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="metrics", db_index=False
    )
    key = models.CharField(max_length=KEY_MAX_LENGTH)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    step = models.ForeignKey(Step, null=True, blank=True, on_delete=models.PROTECT)
    lower_limit = models.FloatField(null=True, blank=True)
    nominal = models.FloatField(null=True, blank=True)
    upper_limit = models.FloatField(null=True, blank=True)
    unit_of_measure = models.CharField(max_length=32, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ENABLED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "key"], name="metric_key_unique_per_product"
            ),
            _status_check("metric"),
            models.CheckConstraint(
                condition=Q(lower_limit__isnull=True)
                | Q(upper_limit__isnull=True)
                | Q(lower_limit__lte=F("upper_limit")),
                name="metric_lower_le_upper",
                violation_error_message="lower_limit must not exceed upper_limit",
            ),
            models.CheckConstraint(
                condition=Q(lower_limit__isnull=True)
                | Q(nominal__isnull=True)
                | Q(lower_limit__lte=F("nominal")),
                name="metric_lower_le_nominal",
                violation_error_message="lower_limit must not exceed nominal",
            ),
            models.CheckConstraint(
                condition=Q(nominal__isnull=True)
                | Q(upper_limit__isnull=True)
                | Q(nominal__lte=F("upper_limit")),
                name="metric_nominal_le_upper",
                violation_error_message="nominal must not exceed upper_limit",
            ),
        ]

    def __str__(self) -> str:
        return self.key


class Measurement(models.Model):
    metric = models.ForeignKey(
        Metric, on_delete=models.PROTECT, related_name="measurements", db_index=False
    )
    # Indexed once, by the named index below.
    unit = models.ForeignKey(
        Unit, on_delete=models.PROTECT, related_name="measurements", db_index=False
    )
    value = models.FloatField()
    measured_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "unit"], name="measurement_unique_per_metric_unit"
            ),
        ]
        indexes = [
            models.Index(fields=["unit"], name="measurement_unit"),
            # A metric's range (MIN and MAX) in two lookups: the shift and scale of the
            # analyses' one pass (lab/analysis/moments.py, docs/results.md §9).
            models.Index(fields=["metric", "value"], name="measurement_metric_value"),
        ]


class ApiToken(models.Model):
    """An admin API token. Only a SHA-256 of the secret is stored; the prefix finds the row."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)


class ClientKey(models.Model):
    """A decide API key: belongs to one product and can only decide for it."""

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="client_keys")
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    name = models.CharField(max_length=NAME_MAX_LENGTH, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)


class AuditEvent(models.Model):
    """Who changed what, when: every status change and every re-bucketing."""

    class Action(models.TextChoices):
        STATUS_CHANGED = "status_changed"
        REBUCKETED = "rebucketed"
        FORCED = "forced"
        CONDITIONS_CHANGED = "conditions_changed"
        SCHEDULE_CHANGED = "schedule_changed"
        LAYER_CHANGED = "layer_changed"
        RANDOMIZE_BY_CHANGED = "randomize_by_changed"
        DESIGN_CREATED = "design_created"

    product = models.ForeignKey(
        Product, on_delete=models.PROTECT, related_name="audit_events", db_index=False
    )
    actor = models.CharField(max_length=NAME_MAX_LENGTH)
    action = models.CharField(max_length=32, choices=Action.choices)
    object_type = models.CharField(max_length=32)
    object_key = models.CharField(max_length=400)
    # Text: a condition list or a schedule is longer than a status or a variant key.
    from_value = models.TextField(blank=True, default="")
    to_value = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["product", "-id"], name="audit_product_recent")]
        ordering = ["-id"]
