"""Open a rendered report in headless Chromium, as a user would: tables and figures present, decoded, visible.

Skipped when no Chromium is installed, unless EQUIBENCH_REQUIRE_BROWSER=1 (CI), where a missing browser is a
failure. Debian: ``apt-get install -y chromium``; EQUIBENCH_CHROMIUM=/path/to/chrome picks another binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WINDOW = (1280, 4000)

# Test-only probe appended to a *copy* of the report (the report itself has no JavaScript): after load it
# records, for every image, whether it decoded and its drawn size, and for every table its size and overflow.
PROBE = """<script>
window.addEventListener("load", function () {
  function box(el) { var r = el.getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; }
  var out = {
    images: Array.prototype.map.call(document.images, function (i) {
      return {alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
              box: box(i)};
    }),
    tables: Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
      var wrap = t.closest(".table-wrap");
      return {rows: t.rows.length, box: box(t), hidden: getComputedStyle(t).visibility !== "visible",
              overflow: wrap ? wrap.scrollWidth - wrap.clientWidth : 0,
              owner: (t.closest("[id]") || {}).id || null};
    })
  };
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find_chromium() -> str | None:
    override = os.environ.get("EQUIBENCH_CHROMIUM")
    if override:
        return shutil.which(override) or (override if Path(override).is_file() else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def require_chromium() -> str:
    """The browser binary; a skip without one, or a failure when EQUIBENCH_REQUIRE_BROWSER=1."""
    found = find_chromium()
    if found is None:
        msg = ("headless Chromium not found (looked for EQUIBENCH_CHROMIUM or " + ", ".join(CANDIDATES)
               + "); install it with `apt-get install -y chromium`")
        if os.environ.get("EQUIBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " -- required because EQUIBENCH_REQUIRE_BROWSER=1")
        pytest.skip(msg)
    return found


def run_chromium(binary: str, profile_dir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
           f"--user-data-dir={profile_dir}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           "--virtual-time-budget=10000", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res


@pytest.fixture(scope="module")
def rendered(request) -> Path | None:
    """The report of the real end-to-end sweep (tests/conftest.py `e2e_run`); None without a browser, where
    each test skips (or fails, when a browser is required) before using it."""
    if find_chromium() is None:
        return None
    out, _ = request.getfixturevalue("e2e_run")
    return out / "report.html"


def test_dom_has_tables_and_figures(rendered, tmp_path):
    chromium = require_chromium()
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", rendered.as_uri()).stdout
    assert "<script" not in dom
    for level, want in (("network", ["cnn", "gmr"]), ("layer", ["layer_conv2d", "layer_gmr"])):
        headline = re.search(rf'<div class="table-block" id="headline-{level}">(.*?)</table>', dom, re.S)
        assert headline, f"{level} headline table missing from the DOM"
        models = re.findall(r'<td class="txt key" data-col="model"><span class="v">([^<]+)</span>', headline.group(1))
        assert models == want
    for section in ("environment", "headline", "equivariance", "accuracy", "efficiency", "failed"):
        assert f'id="{section}"' in dom
    assert dom.count('<img src="data:image/png;base64,') >= 6
    assert "accuracy:plugin_models:broken/rotdigits:seed0" in dom and "always fails" in dom


def test_images_decode_and_tables_are_visible(rendered, tmp_path):
    chromium = require_chromium()
    probe = tmp_path / "probe.html"
    probe.write_text(rendered.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", probe.as_uri()).stdout
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert m, "the probe did not run (page never finished loading?)"
    result = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert len(result["images"]) >= 6
    for img in result["images"]:
        assert img["complete"] and img["naturalWidth"] > 0 and img["naturalHeight"] > 0, img
        assert img["box"]["w"] > 300 and img["box"]["h"] > 150, img  # drawn at a readable size
        assert img["box"]["w"] <= WINDOW[0], img
    assert len(result["tables"]) >= 8
    for table in result["tables"]:
        assert table["rows"] >= 2 and table["box"]["w"] > 0 and table["box"]["h"] > 0 and not table["hidden"]
    for owner in ("headline-network", "headline-layer"):
        headline = next(t for t in result["tables"] if t["owner"] == owner)
        assert headline["overflow"] <= 0, f"{owner} table needs horizontal scrolling at 1280 px"


def test_screenshot_is_not_blank(rendered, tmp_path):
    import numpy as np
    from PIL import Image, ImageStat

    chromium = require_chromium()
    shot = tmp_path / "report.png"
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", rendered.as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == WINDOW
    assert max(ImageStat.Stat(img).stddev) > 20, "screenshot looks blank"
    colours = img.resize((320, 1000)).getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 200
    # the first figure (equivariance error vs angle) is on screen and draws coloured model lines
    probe = tmp_path / "probe.html"
    probe.write_text(rendered.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(chromium, tmp_path / "profile2", "--dump-dom", probe.as_uri()).stdout
    result = json.loads(re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S).group(1)
                        .replace("&quot;", '"').replace("&amp;", "&"))
    box = result["images"][0]["box"]
    assert box["y"] + box["h"] < WINDOW[1]
    crop = img.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["w"]), int(box["y"] + box["h"])))
    px = np.asarray(crop, dtype=int)
    saturated = int(((px.max(axis=2) - px.min(axis=2)) > 80).sum())
    assert saturated > 500, "the figure area has no coloured lines"
