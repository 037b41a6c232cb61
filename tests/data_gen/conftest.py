"""Shared fixtures: one tiny dataset per test session (generated in well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data_gen") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out
