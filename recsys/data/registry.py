"""Resolve a dataset name or path to a :class:`Split`: the one entry point training CLIs call.

``load_split("gowalla")`` gives the published LightGCN split; ``load_split("data/small")`` loads a
``data_gen`` directory and splits it in time; a folder holding ``train.txt`` is read as a LightGCN
split. Every result is a pure function of the files and the arguments (no on-disk cache: loading the
largest dataset takes about a second).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from recsys.data.datagen import load_datagen
from recsys.data.dataset import DataError, Split
from recsys.data.lightgcn import load_lightgcn
from recsys.data.splits import temporal_split

#: Repository root: recsys/data/registry.py -> parents[2].
_REPO_ROOT = Path(__file__).resolve().parents[2]
#: Environment variable that overrides where the Gowalla files are.
GOWALLA_ENV = "FEEDREC_GOWALLA_DIR"


def gowalla_dir() -> Path:
    """Folder with Gowalla's ``train.txt``/``test.txt``.

    ``$FEEDREC_GOWALLA_DIR`` when set, else ``<repo>/../shared/datasets/gowalla`` (relative to the
    repository, not the working directory).

    Raises:
        DataError: the folder or its files are missing (the message says how to point at them).
    """
    env = os.environ.get(GOWALLA_ENV)
    path = Path(env).expanduser() if env else (_REPO_ROOT.parent / "shared" / "datasets" / "gowalla").resolve()
    missing = [name for name in ("train.txt", "test.txt") if not (path / name).is_file()]
    if missing:
        origin = f"${GOWALLA_ENV}" if env else "the default location"
        raise DataError(
            f"{path}: Gowalla files not found ({', '.join(missing)} missing at {origin}); "
            f"set {GOWALLA_ENV} to the folder holding the LightGCN train.txt and test.txt"
        )
    return path


def _is_datagen_dir(path: Path) -> bool:
    return any((path / name).exists() for name in ("interactions.parquet", "interactions"))


def load_split(source: str | Path, events: bool = True, **kwargs: Any) -> Split:
    """Load a split by name or path.

    Args:
        source (str | Path): ``"gowalla"``; a ``data_gen`` output folder (has ``interactions.parquet``
            or ``interactions/``), split with :func:`temporal_split`; or a LightGCN-format folder (has
            ``train.txt``).
        events (bool): Keep a ``data_gen`` folder's raw events (``Dataset.events``, impressions
            included); ``False`` for trainers that read only the positives (see
            :func:`recsys.data.datagen.load_datagen`). (default: True)
        **kwargs: Passed to :func:`temporal_split` (``valid_frac``, ``test_frac``) for a ``data_gen``
            folder, or to :func:`load_lightgcn` (``name``) for a LightGCN folder.

    Raises:
        DataError: an unknown name, a missing folder, or a folder of neither kind.
    """
    if str(source) == "gowalla":
        return load_lightgcn(gowalla_dir(), name="gowalla", **kwargs)
    path = Path(source).expanduser()
    if not path.is_dir():
        raise DataError(f"{source}: no such dataset (give 'gowalla' or a folder of data)")
    if _is_datagen_dir(path):
        return temporal_split(load_datagen(path, events=events), **kwargs)
    if (path / "train.txt").is_file():
        return load_lightgcn(path, **{"name": path.resolve().name, **kwargs})
    raise DataError(f"{path}: neither a data_gen folder (interactions.parquet) nor a LightGCN folder (train.txt)")
