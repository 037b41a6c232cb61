"""Fixtures: one tiny dataset (with truth/) and one simulated world per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("monitoring") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out


@pytest.fixture(scope="session")
def world(tiny_data: Path):
    from monitoring.scenarios import load_world

    return load_world(tiny_data)


@pytest.fixture(scope="session")
def catalog(tiny_data: Path):
    from monitoring.features import load_catalog

    return load_catalog(tiny_data)
