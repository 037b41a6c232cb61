"""Bounded schemathesis run against a real ``python -m serving`` (issue 11 item 10); ``make fuzz`` runs it.

The run fails on any 5xx (``not_a_server_error``) and on any response the OpenAPI document does not
describe: an undocumented status code, content type, or a body that violates its schema. It is
deterministic (``--generation-deterministic``: the same cases every run) and bounded
(``--max-examples`` per operation, one worker), ~20 s here. The admin token is not sent: the reload
route is fuzzed up to its 401, which comes before the body is read; its other answers are covered by
``test_hardening.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 50


@pytest.fixture(scope="module")
def fuzzed(serve, serving_bundles, tmp_path_factory):
    return serve({"FEEDREC_MODELS": f"gnn={serving_bundles['gnn']}", "FEEDREC_PARITY_USERS": "0",
                  "FEEDREC_ADMIN_TOKEN": "fuzz-token-not-sent",
                  "FEEDREC_EVENTS_DIR": str(tmp_path_factory.mktemp("fuzz") / "events")})  # fmt: skip


def schemathesis_command() -> list[str]:
    found = Path(sys.executable).with_name("schemathesis")
    if found.exists():
        return [str(found)]
    which = shutil.which("schemathesis")
    if which is None:
        pytest.fail("schemathesis is not installed: `make install` installs the dev extras")
    return [which]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzzed, tmp_path):
    run = subprocess.run(
        [*schemathesis_command(), "run", f"{fuzzed.url}/openapi.json", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--workers", "1", "--no-color",
         "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    summary = run.stdout[run.stdout.rfind("SUMMARY"):] if "SUMMARY" in run.stdout else run.stdout[-3000:]
    print(summary)  # the totals for the docs: `make fuzz` shows them
    generated = re.search(r"(\d+) generated", run.stdout)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert generated and int(generated.group(1)) >= 100, summary  # it really ran
    assert "Traceback" not in fuzzed.log()
