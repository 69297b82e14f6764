"""Fixtures of the analysis tests (builders in tests/analysis/builders.py)."""

import pytest

from lab.models import Product
from tests.analysis.builders import Plant


@pytest.fixture
def plant(product) -> Plant:
    return Plant(Product.objects.get(key="widget", user__username="alice"))
