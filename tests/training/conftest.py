from pathlib import Path

import pytest

from data_gen.generate import generate
from data_gen.generator_config import resolve_config


@pytest.fixture(scope="session")
def tiny_datagen(tmp_path_factory) -> Path:
    """The data_gen ``tiny`` preset (seed 7), generated once for the training tests."""
    out = tmp_path_factory.mktemp("data") / "tiny"
    generate(resolve_config("tiny", seed=7), out, progress=False)
    return out
