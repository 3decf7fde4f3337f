"""Shared fixtures and the --soak switch for long runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from tests.epoch_rig import Rig

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("soak", deadline=None, max_examples=20_000,
                          suppress_health_check=[HealthCheck.too_slow])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", default=False,
                     help="run the long soak tests (thousands of seeds, large sizes)")
    parser.addoption("--seeds", type=int, default=2000,
                     help="how many simulation seeds the soak tests run (with --soak)")
    parser.addoption("--first-seed", type=int, default=1000,
                     help="first seed of the soak range (to replay or split a long run)")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("soak" if config.getoption("--soak") else "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def soak(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--soak"))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Five committee peers and a spare in one process over real stores, driven by hand (tests/epoch_rig.py)."""
    from tests.epoch_rig import Rig

    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()
