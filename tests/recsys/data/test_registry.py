from __future__ import annotations

from pathlib import Path

import pytest

import recsys
from recsys.data import DataError, gowalla_dir, load_split
from recsys.data.registry import GOWALLA_ENV


def lightgcn_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.txt").write_text("0 1 2\n1 0\n")
    (path / "test.txt").write_text("0 0\n1 2\n")
    return path


def test_gowalla_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(GOWALLA_ENV, str(lightgcn_dir(tmp_path / "g")))
    assert gowalla_dir() == tmp_path / "g"
    split = load_split("gowalla")
    assert split.kind == "given" and split.train.name == "gowalla" and split.test.nnz == 2


def test_gowalla_dir_missing_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(GOWALLA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=f"train.txt, test.txt missing.*{GOWALLA_ENV}"):
        gowalla_dir()


def test_gowalla_default_is_relative_to_the_repository_not_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv(GOWALLA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    expected = (Path(recsys.__file__).resolve().parents[1].parent / "shared" / "datasets" / "gowalla").resolve()
    if (expected / "train.txt").is_file():
        assert gowalla_dir() == expected
    else:
        with pytest.raises(DataError, match=str(expected)):
            gowalla_dir()


def test_load_split_dispatches_on_the_folder_kind(tmp_path, datagen_dir):
    temporal = load_split(datagen_dir, valid_frac=0.1, test_frac=0.2)
    assert temporal.kind == "temporal" and temporal.info["test_frac"] == 0.2
    assert load_split(str(datagen_dir)).hash() == load_split(datagen_dir).hash()
    given = load_split(lightgcn_dir(tmp_path / "yelp"))
    assert given.kind == "given" and given.train.name == "yelp"


def test_load_split_rejects_unknown_sources(tmp_path):
    with pytest.raises(DataError, match="no such dataset"):
        load_split(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a data_gen folder"):
        load_split(tmp_path / "empty")
