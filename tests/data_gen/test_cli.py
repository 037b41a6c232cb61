from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "data_gen", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def test_help() -> None:
    top, gen = _run("--help"), _run("generate", "--help")
    assert top.returncode == 0 and "validate" in top.stdout and "summary" in top.stdout
    assert (
        gen.returncode == 0
        and "--preset" in gen.stdout
        and "--set" in gen.stdout
        and "--overwrite" in gen.stdout
    )


def test_generate_then_summary_and_refuse_existing(tmp_path: Path) -> None:
    out = tmp_path / "t"
    run = _run(
        "--preset", "tiny", "--seed", "3", "--out", str(out), "--set", "users.n_users=500", "--no-progress"
    )
    assert run.returncode == 0, run.stderr
    assert "rows: users | 500" in run.stdout and "CARD.md" in run.stdout and "cold_user_share" in run.stdout
    summary = _run("summary", str(out))
    assert summary.returncode == 0 and "seed 3" in summary.stdout and "ctr" in summary.stdout
    again = _run("--preset", "tiny", "--out", str(out), "--no-progress")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_bad_configuration_exits_2_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "never"
    run = _run(
        "--preset", "tiny", "--out", str(out), "--set", "graph.reciprocity_prob=2", "--set", "users.bogus=1"
    )
    assert run.returncode == 2
    assert "graph.reciprocity_prob" in run.stderr and "users.bogus: unknown key" in run.stderr
    assert "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("preset: tiny\nusers:\n  n_users: -1\n")
    run = _run("--config", str(cfg), "--out", str(tmp_path / "x"))
    assert run.returncode == 2 and "bad.yaml" in run.stderr and "users.n_users" in run.stderr
