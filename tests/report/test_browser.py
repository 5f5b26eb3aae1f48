"""The report in a real browser: headless Chromium loads it with no console errors, no
network requests, and every figure drawn at a non-zero size; a screenshot is saved.

Needs Debian's ``chromium`` and ``chromium-driver`` (/usr/bin/chromium, /usr/bin/chromedriver)
and selenium; skipped with the reason where any is missing. Installs nothing at run time
(the driver path is given, and Selenium Manager is told to stay offline).

For the README's screenshot, check a real run's report and keep its top 1,800 px::

    RESGRAD_REPORT=runs/study/report.html RESGRAD_SCREENSHOT=docs/report-screenshot.png \
    RESGRAD_SCREENSHOT_HEIGHT=1800 .venv/bin/pytest tests/report/test_browser.py -k real

(without RESGRAD_REPORT the saved quick study's report is used).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from resgrad.report import render

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1366, 900  # a laptop screen


@pytest.fixture
def browser(chromium):
    return chromium(WIDTH, HEIGHT)


def _full_page_png(driver) -> bytes:
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    cap = os.environ.get("RESGRAD_SCREENSHOT_HEIGHT")
    height = min(height, int(cap)) if cap else height
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}})
    return base64.b64decode(shot["data"])


def _check(driver, html_path: Path, min_figures: int, shot: Path, keep: bool = False) -> None:
    driver.get(html_path.resolve().as_uri())
    driver.execute_script("return document.fonts ? document.fonts.ready : null")
    assert driver.title.startswith("resgrad report")

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    sizes = driver.execute_script("""
        return Array.from(document.querySelectorAll('img, svg')).map(e => {
            const r = e.getBoundingClientRect();
            return {tag: e.tagName, alt: e.getAttribute('alt'), w: r.width, h: r.height,
                    natural: e.tagName === 'IMG' ? (e.complete ? e.naturalWidth : 0) : -1};
        });""")
    assert len(sizes) >= min_figures, sizes
    for s in sizes:
        assert s["w"] > 0 and s["h"] > 0, f"figure drawn at zero size: {s}"
        assert s["natural"] != 0, f"figure did not decode: {s}"
    # No figure wider than the page (a laptop screen): nothing to scroll sideways for.
    assert driver.execute_script("return document.documentElement.scrollWidth") <= WIDTH

    # Nothing was fetched but the file itself and its inline data.
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(u.startswith(("data:", "file:")) for u in fetched), fetched

    png = _full_page_png(driver)
    shot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    if keep and os.environ.get("RESGRAD_SCREENSHOT"):
        out = Path(os.environ["RESGRAD_SCREENSHOT"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(png)


def test_full_report_in_headless_chromium(browser, study_report, tmp_path):
    _check(browser, study_report, min_figures=7, shot=tmp_path / "report.png")


def test_partial_report_in_headless_chromium(browser, study, tmp_path):
    html = render(study.flow, tmp_path / "report.html")
    _check(browser, html, min_figures=2, shot=tmp_path / "partial.png")


def test_real_report_in_headless_chromium(browser, study_report, tmp_path):
    given = os.environ.get("RESGRAD_REPORT")
    if given and not Path(given).is_file():
        pytest.fail(f"RESGRAD_REPORT={given} is not a file; point it at a run's report.html")
    _check(browser, Path(given) if given else study_report, min_figures=1 if given else 7,
           shot=tmp_path / "real.png", keep=True)
