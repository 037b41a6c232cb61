"""training/protocol.py: the one validation carve-out and selection view every trainer uses."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from recsys.data import carve_validation, load_split
from recsys.evaluation import evaluate
from recsys.models.popular import PopularRecommender
from tests.recsys.models.mixin import planted_signal
from training.protocol import DataConfig, load_protocol

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lightgcn_dir(tmp_path_factory) -> Path:
    """The planted-signal fixture as a LightGCN folder (a given train/test split, no validation)."""
    out = tmp_path_factory.mktemp("planted")
    p = planted_signal(users_per_group=20)
    for name, m in (("train.txt", p.dataset.user_items), ("test.txt", p.held_out)):
        lines = [" ".join(map(str, [u, *m.indices[m.indptr[u] : m.indptr[u + 1]]])) for u in range(m.shape[0])]
        (out / name).write_text("\n".join(lines) + "\n")
    return out


def test_a_given_split_gets_the_carve_out_the_config_names(lightgcn_dir):
    data = DataConfig(source=str(lightgcn_dir), valid_users=30, valid_fraction=0.25, valid_seed=3)
    protocol = load_protocol(data)
    split = load_split(lightgcn_dir)
    expected = carve_validation(split, 30, 0.25, 3, "latest")
    assert protocol.carved and (protocol.split.valid != expected.valid).nnz == 0
    assert protocol.split.hash() == expected.hash()
    assert load_protocol(data).split.hash() == protocol.split.hash()  # deterministic
    # the final model trains on everything before the test window: all of the loaded train
    assert protocol.refit_data() is protocol.source_train
    assert ((protocol.split.train.user_items + protocol.split.valid) != split.train.user_items).nnz == 0
    assert "30 users" in protocol.describe()


def test_valid_users_none_carves_every_user_with_three_items(lightgcn_dir):
    protocol = load_protocol(DataConfig(source=str(lightgcn_dir), valid_users=None))
    eligible = protocol.source_train.user_counts() >= 3
    assert ((np.diff(protocol.split.valid.indptr) > 0) == eligible).all()


def test_the_selection_view_has_no_test_positives(lightgcn_dir):
    protocol = load_protocol(DataConfig(source=str(lightgcn_dir)))
    selection = protocol.selection
    assert protocol.split.test.nnz > 0 and selection.test.nnz == 0
    assert selection.test.shape == protocol.split.test.shape
    assert (selection.valid != protocol.split.valid).nnz == 0 and selection.train is protocol.split.train
    model = PopularRecommender().fit(selection.train)
    assert evaluate(model, selection, on="test", ks=(5,)).metrics["n_users"] == 0  # measures nobody


def test_a_temporal_split_keeps_its_validation_window(tiny_datagen):
    protocol = load_protocol(DataConfig(source=str(tiny_datagen)))
    split = load_split(tiny_datagen)
    assert not protocol.carved and protocol.split.hash() == split.hash()
    assert (protocol.refit_data().user_items != split.train_with_valid().user_items).nnz == 0


def test_the_gowalla_configs_share_the_protocol_and_do_not_restate_it():
    # Issue 12/14: MF selected on a random 10% of every user, the GNN on the latest 20% of 5000
    # users. Now the carve-out is chosen in one place (DataConfig's defaults) and neither Gowalla
    # config may override it.
    sections = {name: yaml.safe_load((ROOT / "configs/train" / name).read_text())["data"]
                for name in ("mf_gowalla.yaml", "gnn_gowalla.yaml")}
    assert all(section == {"source": "gowalla"} for section in sections.values()), sections
    d = DataConfig()
    assert (d.valid_users, d.valid_fraction, d.valid_from, d.valid_seed) == (5000, 0.2, "latest", 0)
