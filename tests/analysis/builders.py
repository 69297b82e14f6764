"""Builders for the analysis tests: units that go through several experiments (one per
process step) and get measured, written straight to the database (the write APIs have
their own tests)."""

from datetime import timedelta
from fractions import Fraction
from pathlib import Path

from django.utils import timezone

from lab.models import (
    Assignment,
    AssignmentSource,
    Experiment,
    Measurement,
    Metric,
    Product,
    Unit,
    Variant,
)

NIST = Path(__file__).resolve().parent.parent / "data" / "nist"
T0 = timezone.now().replace(microsecond=0) - timedelta(days=30)


class Plant:
    """A product whose units are assigned in experiments and measured on metrics."""

    def __init__(self, product: Product):
        self.product = product
        self.experiments: dict[str, Experiment] = {}
        self.variants: dict[tuple[str, str], Variant] = {}
        self.metrics: dict[str, Metric] = {}
        self._serial = 0

    def experiment(self, key: str, variants: list[str], **fields) -> Experiment:
        experiment = Experiment.objects.create(product=self.product, key=key, **fields)
        self.experiments[key] = experiment
        for variant in variants:
            self.variants[(key, variant)] = Variant.objects.create(
                experiment=experiment, key=variant
            )
        return experiment

    def metric(self, key: str, **fields) -> Metric:
        self.metrics[key] = Metric.objects.create(product=self.product, key=key, **fields)
        return self.metrics[key]

    def units(
        self,
        assignments: list[dict[str, str]],
        measurements: dict[str, list[float]] | None = None,
        *,
        keys: list[str] | None = None,
        times: list | None = None,
    ) -> list[Unit]:
        """One new unit per entry of ``assignments`` ({experiment: variant}), measured with
        the values of ``measurements[metric][i]`` (None: not measured)."""
        count = len(assignments)
        if keys is None:
            keys = [f"SN-{self._serial + i:06d}" for i in range(count)]
        self._serial += count
        units = Unit.objects.bulk_create(
            (Unit(product=self.product, key=k) for k in keys), batch_size=500
        )
        Assignment.objects.bulk_create(
            (
                Assignment(
                    experiment=self.experiments[experiment],
                    unit=unit,
                    variant=self.variants[(experiment, variant)],
                    source=AssignmentSource.HASH,
                )
                for unit, chosen in zip(units, assignments, strict=True)
                for experiment, variant in chosen.items()
            ),
            batch_size=500,
        )
        rows = []
        for metric, values in (measurements or {}).items():
            for i, (unit, value) in enumerate(zip(units, values, strict=True)):
                if value is None:
                    continue
                when = times[i] if times is not None else T0 + timedelta(seconds=i)
                rows.append(
                    Measurement(
                        metric=self.metrics[metric], unit=unit, value=value, measured_at=when
                    )
                )
        Measurement.objects.bulk_create(rows, batch_size=500)
        return units

    def group(self, experiment: str, variant: str, metric: str, values: list[float]) -> None:
        """Units all on one variant of one experiment, one value each."""
        self.units([{experiment: variant}] * len(values), {metric: values})


def read_nist(name: str) -> tuple[dict[str, str], list[list[str]]]:
    """The certified values and the data rows of a vendored NIST StRD file."""
    certified, rows = {}, []
    for line in (NIST / f"{name}.dat").read_text().splitlines():
        if line.startswith("# certified "):
            key, value = line[len("# certified ") :].split(":", 1)
            certified[key.strip()] = value.strip()
        elif line and not line.startswith("#"):
            rows.append(line.split())
    return certified, rows


def exact_mean_and_std(values: list[float]) -> tuple[Fraction, float]:
    """Exact mean (a fraction) and the sample std correctly rounded, of the doubles given."""
    exact = [Fraction(v) for v in values]
    mean = sum(exact) / len(exact)
    variance = sum((x - mean) ** 2 for x in exact) / (len(exact) - 1)
    return mean, _sqrt(variance)


def _sqrt(value: Fraction) -> float:
    """sqrt of a non-negative fraction, to double precision (Decimal with 60 digits)."""
    from decimal import Decimal, localcontext

    with localcontext() as context:
        context.prec = 60
        return float((Decimal(value.numerator) / Decimal(value.denominator)).sqrt())


def relative_error(actual: float, expected) -> float:
    expected = Fraction(expected)
    if expected == 0:
        return abs(float(Fraction(actual)))
    return abs(float((Fraction(actual) - expected) / expected))
