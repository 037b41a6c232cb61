from __future__ import annotations

from pathlib import Path

import pytest

from data_gen.generator_config import PRESETS, resolve_config
from feedrec_common.config import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_resolve(preset: str) -> None:
    cfg = resolve_config(preset)
    assert cfg.name == preset
    assert cfg.output.rows_per_shard % cfg.output.row_group_size == 0


def test_preset_sizes_match_the_spec() -> None:
    small, medium, large = (resolve_config(p) for p in ("small", "medium", "large"))
    assert small.users.n_users == 20_000 and small.items.n_items == 50_000
    assert medium.users.n_users >= 100_000
    assert large.users.n_users >= 1_000_000


def test_overrides_file_and_seed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("preset: tiny\nusers:\n  n_users: 123\n")
    cfg = resolve_config(None, path, ["graph.reciprocity_prob=0.5"], seed=11)
    assert (cfg.name, cfg.users.n_users, cfg.graph.reciprocity_prob, cfg.seed) == ("tiny", 123, 0.5, 11)
    assert cfg.items.n_items == PRESETS["tiny"]["items"]["n_items"]  # rest of the preset kept


def test_example_config_in_repo_loads() -> None:
    for path in sorted((REPO / "configs" / "data_gen").glob("*.yaml")):
        resolve_config(None, path)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["users.n_users=-5"], "users.n_users"),
        (["graph.reciprocity_prob=1.5"], "graph.reciprocity_prob"),
        (["users.late_join_fraction=-0.1"], "users.late_join_fraction"),
        (["users.nonsense=1"], "users.nonsense: unknown key"),
        (["simulation.sources.social=0.9"], "sum to 1"),
        (["items.media_probs=[0.5,0.5]"], "media_probs"),
        (["output.rows_per_shard=15000"], "multiple of row_group_size"),
        (["preset=gigantic"], "unknown preset 'gigantic'"),
    ],
)
def test_invalid_configuration_is_rejected(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        resolve_config("tiny", None, overrides)
    assert needle in str(err.value)


def test_unknown_preset_argument() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config("huge")
