"""The HTML report renders in a real browser: headless Chromium shows the decision and every plot.

Needs Debian's ``chromium`` (``make system-deps`` / ``scripts/ensure_system_deps.sh``); the test fails,
rather than skips, when it is missing, so a CI image without it cannot pass silently.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from abtest.report.render import ReportInputs, write_report
from tests.abtest.report_fixtures import experiment, make_events

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip

# Test-only probe, appended to a copy of the page: after load, write what the browser measured into the
# DOM so that --dump-dom carries it out (the report itself contains no script).
MEASURE_SCRIPT = """<script>
window.addEventListener("load", () => {
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    img.setAttribute("data-natural", img.naturalWidth + "x" + img.naturalHeight);
    img.setAttribute("data-rendered", Math.round(r.width) + "x" + Math.round(r.height));
    img.setAttribute("data-complete", String(img.complete && img.naturalWidth > 0));
  }
  document.body.setAttribute("data-measured", "yes");
});
</script>"""


def _chromium() -> str:
    binary = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if binary is None:
        pytest.fail("headless Chromium is not installed (/usr/bin/chromium): run `make system-deps` or "
                    "`apt-get update && apt-get install -y chromium`")  # fmt: skip
    return binary


def _run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    config = experiment()
    exposures, outcomes, _ = make_events(config, users=1500, lift=0.4, seed=11)
    out = tmp_path_factory.mktemp("report")
    paths = write_report(ReportInputs(exposures, outcomes, config), out_dir=out)
    return paths.html, json.loads(paths.summary.read_text())["decision"]


def test_page_shows_the_decision_and_loads_every_plot(report_page, tmp_path):
    page, decision = report_page
    source = page.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(source.replace("</body>", MEASURE_SCRIPT + "</body>"))
    result = _run_chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert 'data-measured="yes"' in dom, "the page did not finish loading"
    decision_tag = re.search(r'<p id="decision"[^>]*>(.*?)</p>', dom, re.S)
    assert decision_tag is not None and decision_tag.group(1).startswith("GNN raises click-through by")
    assert html.unescape(decision_tag.group(1)) == decision
    images = re.findall(r"<img [^>]*>", dom)
    assert len(images) == 3
    for tag in images:
        src = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
        decoded = Image.open(io.BytesIO(base64.b64decode(src)))
        decoded.verify()  # a valid PNG, not just the magic bytes
        assert re.search(r'data-complete="true"', tag), tag[:200]
        natural = tuple(map(int, re.search(r'data-natural="(\d+)x(\d+)"', tag).groups()))
        rendered = tuple(map(int, re.search(r'data-rendered="(\d+)x(\d+)"', tag).groups()))
        assert natural[0] >= 300 and natural[1] >= 200
        assert rendered[0] > 100 and rendered[1] > 100


def test_screenshot_is_not_blank(report_page, tmp_path):
    page, _ = report_page
    shot = tmp_path / "shot.png"
    result = _run_chromium(["--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()], tmp_path / "profile")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    non_white = np.any(pixels < 240, axis=-1)
    assert non_white.mean() > 0.02, "the screenshot is (almost) blank"
    # the plots' coloured lines and bands (matplotlib's blue/red) are drawn below the tables
    blue = (pixels[..., 2] - pixels[..., 0] > 60) & (pixels[..., 2] > 120)
    rows_with_blue = np.flatnonzero(blue.any(axis=1))
    assert len(rows_with_blue) > 100, "no plot is visible"
