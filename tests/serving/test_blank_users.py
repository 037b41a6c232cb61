"""Known users with nothing learned about them take the cold-start path.

Guards the bug seen in `make demo`: ALS gives a user with no training positives an all-zero vector,
so `/recommend` answered item ids 0..k-1 with score 0.0 instead of a fold-in or popular items.
"""

from dataclasses import replace

import numpy as np

from recsys.models.mf import ALSRecommender
from serving.export import export_bundle
from serving.loading import load_serving_model
from serving.settings import ServingSettings


def test_users_without_training_positives_are_flagged_blank(tiny_dataset, tmp_path):
    ui = tiny_dataset.user_items.tolil(copy=True)
    empty = [0, 7]
    for u in empty:
        ui[u, :] = 0
    ui = ui.tocsr()
    ui.eliminate_zeros()
    dataset = replace(tiny_dataset, user_items=ui)
    model = ALSRecommender(factors=8, iterations=3, regularization=0.1, alpha=5.0, num_threads=1).fit(dataset)
    assert np.allclose(model.user_vectors(np.array(empty)).numpy(), 0.0)  # the premise

    served = export_bundle(model.save(tmp_path / "als"), tmp_path / "served", parity_users=20)
    settings = ServingSettings(export_dir=tmp_path / "exports", parity_users=4)
    loaded = load_serving_model("mf", str(served), settings)
    assert [loaded.is_blank(u) for u in empty] == [True, True]
    active = np.flatnonzero(np.diff(ui.indptr) > 0)
    assert not any(loaded.is_blank(int(u)) for u in active)
