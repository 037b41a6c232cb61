"""The layering of docs/architecture.md ("Layers"), so `make test` catches a broken one too.

* the import-linter contracts of ``pyproject.toml`` hold (the same check as ``make lint``), and they
  do fail on a planted import (run on a copy of the packages);
* nothing outside the simulators, the oracle metric, the benchmarks and ``data_gen`` builds a path
  into a dataset's ``truth/`` folder (an import contract cannot see ``data_dir / "truth"``);
* no machine-specific absolute path is in the repository (``scripts/check_abs_paths.py``).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("feedrec_common", "data_gen", "recsys", "serving", "training", "abtest", "monitoring", "retrain", "benchmarks")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
#: Modules that may read truth/ by path (besides data_gen, which writes it, and benchmarks).
TRUTH_READERS = {"abtest/sim/world.py", "abtest/sim/closed_loop.py", "abtest/sim/offline.py", "monitoring/scenarios.py", "training/evaluate.py"}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # The packages under cwd, not the installed ones; wide lines so the report does not wrap.
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold() -> None:
    run = _lint_imports(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 6 kept, 0 broken." in run.stdout


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python sources of every package and pyproject.toml, nothing else."""
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("module", "planted", "contract", "line"),
    [
        ("recsys/metrics.py", "import serving.settings", "recsys is not allowed to import serving",
         "recsys.metrics -> serving.settings"),
        ("serving/features.py", "import training.evaluate", "serving and training never import each other",
         "serving.features -> training.evaluate"),
        ("data_gen/stats.py", "import torch", "data_gen is not allowed to import torch", "data_gen.stats -> torch"),
        ("serving/features.py", "import retrain.loop", "serving is not allowed to import retrain",
         "serving.features -> retrain.loop"),
        ("serving/features.py", "import data_gen.truth", "Illegal imports of protected package data_gen.truth",
         "serving.features -> data_gen.truth"),
        ("feedrec_common/hashing.py", "import recsys.data", "feedrec_common is not allowed to import recsys",
         "feedrec_common.hashing -> recsys.data"),
    ],
)
def test_contracts_fail_on_a_planted_import(package_copy: Path, module: str, planted: str, contract: str,
                                            line: str) -> None:
    path = package_copy / module
    original = path.read_text()
    try:
        # A function-level import counts as much as a top-level one.
        path.write_text(original + f"\n\ndef _planted():\n    {planted}  # noqa: F401\n")
        run = _lint_imports(package_copy)
    finally:
        path.write_text(original)
    assert run.returncode != 0, run.stdout
    assert contract in run.stdout and line in run.stdout, run.stdout


def _truth_paths(path: Path) -> list[int]:
    """Lines where ``... / "truth"`` or ``os.path.join(..., "truth")`` builds a path into truth/."""

    def is_truth(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and (
            node.value == "truth" or node.value.startswith("truth/"))

    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and is_truth(node.right):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(is_truth(a) for a in node.args):
            name = ast.unparse(node.func)
            if name.endswith(("path.join", "joinpath", "Path")):
                lines.append(node.lineno)
    return lines


def test_only_the_simulators_and_the_oracle_read_truth_by_path() -> None:
    offenders = []
    for package in ("recsys", "serving", "training", "abtest", "feedrec_common"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel not in TRUTH_READERS:
                offenders += [f"{rel}:{n}" for n in _truth_paths(path)]
    assert offenders == [], "only the simulators and the oracle metric may read truth/: " + ", ".join(offenders)


def test_truth_path_scan_finds_a_join(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('from pathlib import Path\n\ndef f(d):\n    return Path(d) / "truth" / "params.json"\n')
    assert _truth_paths(module) == [4]


def test_no_machine_specific_paths_in_the_repository() -> None:
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "check_abs_paths.py")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_abs_path_check_names_file_and_line(tmp_path: Path) -> None:
    # The planted root is joined at run time so this file does not spell a machine path itself.
    planted = "/" + "work"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text(f"x: 1\n# tuned values from {planted}/shared/x/README.md\n")
    (tmp_path / "ok.md").write_text(f"see https://example.org{planted}/x and ../shared/datasets\n")
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "check_abs_paths.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"configs/a.yaml:2: machine-specific absolute path '{planted}'" in run.stderr
    assert "ok.md" not in run.stderr
