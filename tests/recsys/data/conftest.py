from __future__ import annotations

import pytest

from tests.recsys.data.datagen_files import make_frames, write_dir


@pytest.fixture
def frames():
    return make_frames()


@pytest.fixture
def datagen_dir(tmp_path, frames):
    return write_dir(tmp_path / "tiny", frames)
