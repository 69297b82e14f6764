"""factory_boy factories for object graphs that tests need as a given."""

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from lab import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Product

    user = factory.SubFactory(UserFactory)
    key = factory.Sequence(lambda n: f"product-{n}")
    name = factory.LazyAttribute(lambda o: o.key.title())


class StepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Step

    product = factory.SubFactory(ProductFactory)
    key = factory.Sequence(lambda n: f"step-{n}")
    position = factory.Sequence(int)


class ExperimentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Experiment

    product = factory.SubFactory(ProductFactory)
    key = factory.Sequence(lambda n: f"experiment-{n}")


class VariantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Variant

    experiment = factory.SubFactory(ExperimentFactory)
    key = factory.Sequence(lambda n: f"v{n}")


class UnitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Unit

    product = factory.SubFactory(ProductFactory)
    key = factory.Sequence(lambda n: f"SN-{n}")


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Assignment

    experiment = factory.SubFactory(ExperimentFactory)
    unit = factory.LazyAttribute(lambda o: UnitFactory(product=o.experiment.product))
    variant = factory.LazyAttribute(lambda o: VariantFactory(experiment=o.experiment))
    source = models.AssignmentSource.HASH


class MetricFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Metric

    product = factory.SubFactory(ProductFactory)
    key = factory.Sequence(lambda n: f"metric-{n}")


class MeasurementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Measurement

    metric = factory.SubFactory(MetricFactory)
    unit = factory.LazyAttribute(lambda o: UnitFactory(product=o.metric.product))
    value = 1.0
    measured_at = factory.LazyFunction(timezone.now)
