"""Designed experiments: fractional factorials whose factors are experiments (docs/designs.md).

Creating a design checks every factor (an experiment of the product with exactly two
variants that are not removed, in no layer and no other design), generates the fraction of
maximum resolution and minimum aberration (rules.designs) and stores its generators, so the
runs never change under the design. Removing it frees the factors; stored assignments stay.
Both change what decide answers, so both bump the product's config version.

On PostgreSQL, creating a design also fills its units' level codes (lab.models.DesignUnit)
from the assignments its factors have already; triggers keep them from then on.
"""

from django.db import IntegrityError, connection, transaction

from lab.db import table
from lab.errors import Conflict, Unprocessable
from lab.models import (
    Assignment,
    AuditEvent,
    Design,
    DesignFactor,
    DesignUnit,
    Experiment,
    Product,
    Status,
)
from lab.services.audit import audit_record
from lab.services.common import apply_changes
from lab.services.config_version import product_config_changed
from rules import designs as rules


def _fill_codes(cursor, design_id: int) -> int:
    """Write a design's level codes from the assignments of its factors (the bits migration
    0012's triggers write); the number of units. Writers of assignments are held off until
    the transaction commits: one that wrote before the design's factors were visible to its
    trigger has committed by then and is counted here; one after it sees them and adds its
    own bits."""
    cursor.execute(f"LOCK TABLE {table(Assignment)} IN SHARE MODE")
    cursor.execute(
        f"""
        INSERT INTO {table(DesignUnit)} (design_id, unit_id, code)
        SELECT f.design_id, r.unit_id, SUM(
            CASE r.variant_id WHEN f.low_id THEN CAST(1 AS BIGINT) << (2 * f.position)
            WHEN f.high_id THEN CAST(2 AS BIGINT) << (2 * f.position) ELSE 0 END)
        FROM {table(Assignment)} r
        JOIN {table(DesignFactor)} f ON f.experiment_id = r.experiment_id
        WHERE f.design_id = %s
        GROUP BY f.design_id, r.unit_id
        """,
        [design_id],
    )
    return cursor.rowcount


def _factor_levels(experiment: Experiment) -> tuple:
    """(control, other): the experiment's two variants that are not removed, the control first
    (the one marked is_control, else the oldest)."""
    variants = list(experiment.variants.exclude(status=Status.REMOVED).order_by("id"))
    if len(variants) != 2:
        raise Unprocessable(
            f"experiment {experiment.key!r} has {len(variants)} variants that are not removed; "
            "a factor needs exactly two"
        )
    low, high = variants
    if high.is_control:
        low, high = high, low
    return low, high


def _check_factors(product: Product, keys: list[str]) -> list[Experiment]:
    if not rules.MIN_FACTORS <= len(keys) <= rules.MAX_FACTORS:
        raise Unprocessable(
            f"a design has {rules.MIN_FACTORS} to {rules.MAX_FACTORS} factors, got {len(keys)}"
        )
    seen = set()
    for key in keys:
        if key in seen:
            raise Unprocessable(f"factor {key!r} is listed twice")
        seen.add(key)
    found = {
        e.key: e
        for e in Experiment.objects.filter(product=product, key__in=keys).select_related("layer")
    }
    experiments = []
    for key in keys:
        experiment = found.get(key)
        if experiment is None or experiment.status == Status.REMOVED:
            raise Unprocessable(f"no experiment {key!r} in product {product.key!r}")
        if experiment.layer_id is not None:
            raise Unprocessable(
                f"experiment {key!r} is in layer {experiment.layer.key!r}; a factor is in no layer"
            )
        experiments.append(experiment)
    taken = (
        DesignFactor.objects.filter(experiment__in=experiments, active=True)
        .select_related("design", "experiment")
        .first()
    )
    if taken is not None:
        raise Unprocessable(
            f"experiment {taken.experiment.key!r} is a factor of design {taken.design.key!r} "
            "already"
        )
    return experiments


def design_create(
    *,
    product: Product,
    actor: str,
    key: str,
    factors: list[str],
    runs: int,
    name: str = "",
    randomize_by: str | None = None,
) -> Design:
    experiments = _check_factors(product, factors)
    try:
        rules.check_size(len(experiments), runs)
    except rules.DesignError as exc:
        raise Unprocessable(str(exc)) from exc
    levels = [_factor_levels(experiment) for experiment in experiments]
    if Design.objects.filter(product=product, key=key).exists():
        raise Conflict(f"a design with key {key!r} exists already in product {product.key!r}")
    # Outside the transaction: the search takes up to seconds and holds no lock.
    fraction = rules.minimum_aberration(len(experiments), runs)
    try:
        with transaction.atomic():
            design = Design.objects.create(
                product=product,
                key=key,
                name=name or key,
                runs=runs,
                generators=fraction.generators,
                randomize_by=randomize_by,
            )
            DesignFactor.objects.bulk_create(
                DesignFactor(design=design, experiment=e, position=i, low=low, high=high)
                for i, (e, (low, high)) in enumerate(zip(experiments, levels, strict=True))
            )
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    _fill_codes(cursor, design.id)
            audit_record(
                product=product,
                actor=actor,
                action=AuditEvent.Action.DESIGN_CREATED,
                object_type="design",
                object_key=key,
                to_value=",".join(factors),
            )
            product_config_changed(product)
    except IntegrityError as exc:
        # A concurrent create took the key or one of the experiments.
        raise Conflict(
            f"design {key!r} conflicts with another design: its key or one of its factors "
            "was taken meanwhile"
        ) from exc
    return design


@transaction.atomic
def design_remove(*, design: Design, actor: str) -> Design:
    if design.status == Status.REMOVED:
        return design
    apply_changes(
        obj=design,
        changes={"status": Status.REMOVED},
        product=design.product,
        actor=actor,
        object_type="design",
        object_key=design.key,
    )
    DesignFactor.objects.filter(design=design).update(active=False)
    product_config_changed(design.product)
    return design


def design_codes_rebuild() -> tuple[int, int]:
    """Write every design's level codes again from the assignments, in one transaction that
    holds off writers of assignments (PostgreSQL; on SQLite the analysis computes the codes
    and there is nothing to rebuild). For writes the triggers did not see: made under
    ``session_replication_role = replica``, or with the triggers disabled. Returns (designs,
    unit codes written)."""
    if connection.vendor != "postgresql":
        return 0, 0
    written = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {table(Assignment)} IN SHARE MODE")
        cursor.execute(f"DELETE FROM {table(DesignUnit)}")
        designs = list(Design.objects.order_by("id").values_list("id", flat=True))
        for design_id in designs:
            written += _fill_codes(cursor, design_id)
    return len(designs), written
