"""Models, features and candidate sources never read ``truth/`` (ARCHITECTURE.md, dependency rules).

Every module of ``recsys/`` (the feed included) and ``training/train_ranker.py`` is parsed: none may import
``data_gen`` or ``abtest`` (the simulators' packages that hold the click model), and no string in its code
(docstrings aside) may name ``truth``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FILES = sorted((ROOT / "recsys").rglob("*.py")) + [ROOT / "training" / "train_ranker.py"]
FORBIDDEN_IMPORTS = ("data_gen", "abtest")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_IMPORTS:
                found.append(f"{path.name}:{node.lineno} imports {name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if "truth" in node.value.lower():
                found.append(f"{path.name}:{node.lineno} names truth in {node.value[:40]!r}")
    return found


def test_the_feed_modules_are_covered():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {"recsys/feed/features.py", "recsys/feed/state.py", "recsys/feed/candidates/gnn.py",
            "training/train_ranker.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_model_feature_or_source_reads_truth(path):
    assert violations(path) == []


def test_the_check_catches_a_reader(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Docs may say truth/."""\nfrom data_gen.truth import ClickModel\nX = "data/small/truth"\n')
    assert len(violations(bad)) == 2
