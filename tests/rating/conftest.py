"""Fixtures for rating tests: the demo catalogue and a builder for small in-memory ones."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from ocs.rating import Catalogue, load_catalogue
from ocs.rating.loader import check_documents

from .helpers import DEMO, base_document


@pytest.fixture(scope="session")
def demo() -> Catalogue:
    return load_catalogue(DEMO)


Builder = Callable[..., Catalogue]


@pytest.fixture
def build() -> Builder:
    """build(mutate) -> Catalogue: apply `mutate(doc)` to a copy of the base document."""

    def make(mutate: Callable[[dict[str, Any]], None] | None = None) -> Catalogue:
        doc = copy.deepcopy(base_document())
        if mutate is not None:
            mutate(doc)
        report = check_documents({"test.yaml": doc})
        assert report.catalogue is not None, [str(i) for i in report.issues]
        return report.catalogue

    return make
