"""Datasets: loading (LightGCN text files, ``data_gen`` parquet), splits and the ``Dataset`` type."""

from recsys.data.datagen import load_datagen
from recsys.data.dataset import DataError, Dataset, IdMap, Split
from recsys.data.lightgcn import load_lightgcn
from recsys.data.registry import gowalla_dir, load_split
from recsys.data.splits import carve_validation, temporal_split

__all__ = [
    "DataError",
    "Dataset",
    "IdMap",
    "Split",
    "carve_validation",
    "gowalla_dir",
    "load_datagen",
    "load_lightgcn",
    "load_split",
    "temporal_split",
]
