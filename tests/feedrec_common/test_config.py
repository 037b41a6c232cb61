from pathlib import Path

import pytest
from pydantic import Field

from feedrec_common.config import ConfigError, StrictModel, apply_overrides, load_config


class Model(StrictModel):
    factors: int = Field(64, gt=0)
    reg: float = 0.1


class Run(StrictModel):
    name: str = "run"
    model: Model = Model()
    tags: list[str] = []


def test_defaults_file_and_overrides_layer_in_order(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: from-file\nmodel:\n  factors: 32\n")
    cfg = load_config(Run, cfg_file, ["model.reg=0.5", "tags=[a, b]"], base={"name": "base"})
    assert cfg.name == "from-file"
    assert cfg.model.factors == 32
    assert cfg.model.reg == pytest.approx(0.5)
    assert cfg.tags == ["a", "b"]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["model.factorz=3"], "model.factorz: unknown key"),
        (["model.factors=-1"], "model.factors"),
        (["model.factors=abc"], "model.factors"),
        (["nonsense"], "not of the form key=value"),
        (["=3"], "empty key"),
    ],
)
def test_invalid_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(Run, None, overrides)
    assert fragment in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ok\nmodel: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+"):
        load_config(Run, bad)


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, tmp_path / "nope.yaml")


def test_override_cannot_descend_into_a_scalar():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])
