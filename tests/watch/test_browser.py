"""The watch page in headless Chromium while a run is written: the heat map grows as rows land,
the alarm appears in words, the loss curve draws, no console error, no request leaves 127.0.0.1.

Needs Debian's ``chromium`` and ``chromium-driver`` and selenium (as tests/report/test_browser.py);
skipped with the reason where any is missing. ``RESGRAD_WATCH_SCREENSHOT=page.png`` keeps a
screenshot of the page at the end.
"""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from resgrad.integrations.monitor_file import row_line
from resgrad.watch import make_server

pytestmark = pytest.mark.browser

LAYERS = 6


@pytest.fixture
def browser(chromium):
    return chromium(1366, 1000)


def _rows(step):
    # unit 0's gradient 1e-6 of the last unit's from step 40 on: vanishing once the window (30) has passed
    out = [{"step": step, "name": f"blocks.{i}", "kind": "input", "block": i,
            "norm": 1e-6 if (i == 0 and step >= 40) else 0.5 + i / 10, "rms": None, "numel": 8, "nonfinite": 0,
            "ratio": None} for i in range(4)]
    out += [{"step": step, "name": f"layer{i}.weight", "kind": "param", "block": None,
             "norm": 10.0 ** (-i) * (1 + step / 100), "rms": None, "numel": 4, "nonfinite": 0, "ratio": None}
            for i in range(LAYERS)]
    return out


def _wait(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def test_the_page_follows_a_run_being_written(browser, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    server = make_server(run, 0, window=30)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    stop = threading.Event()
    written = []

    def writer():
        with open(run / "monitor.jsonl", "a") as f:
            for k, step in enumerate(range(0, 400, 10)):
                if stop.is_set():
                    return
                f.write("".join(map(row_line, _rows(step))))
                f.flush()
                written.append(step)
                if k % 10 == 9:
                    with open(run / "metrics.jsonl", "a") as m:
                        m.write(json.dumps({"epoch": k // 10 + 1, "train_loss": 2.0 / (k + 1),
                                            "test_loss": 2.2 / (k + 1)}) + "\n")
                time.sleep(0.25)

    th = threading.Thread(target=writer, daemon=True)
    th.start()
    try:
        browser.get(server.url)
        steps = lambda: int(browser.find_element("id", "heat").get_attribute("data-steps") or 0)  # noqa: E731
        first = _wait(lambda: steps() >= 2 and steps())
        grown = _wait(lambda: steps() >= first + 5 and steps())
        assert grown > first  # the heat map grew while the run was written, without a reload
        assert browser.find_element("id", "heat").get_attribute("data-layers") == str(LAYERS)
        assert browser.execute_script("return performance.getEntriesByType('navigation').length") == 1  # no reload
        alarm = _wait(lambda: browser.find_elements("css selector", "#alarms .alarm"))
        assert alarm[0].get_attribute("data-kind") == "vanishing"
        assert "unit 0 (blocks.0)'s gradient has been at most 1e-6 of the last unit's" in alarm[0].text
        _wait(lambda: browser.find_elements("css selector", "#loss polyline"))
        assert len(browser.find_elements("css selector", "#units rect")) == 4  # one bar per unit
        h = browser.execute_script("return document.getElementById('heat').getBoundingClientRect().height")
        assert h > LAYERS * 3
        # every pixel drawn is the page's own: the canvas is not blank
        painted = browser.execute_script("""
            const c = document.getElementById('heat'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n;""")
        assert painted > 1000
        origin = server.url.rstrip("/")
        urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(origin + "/") for u in urls), urls
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        shot = os.environ.get("RESGRAD_WATCH_SCREENSHOT")
        if shot:
            _wait(lambda: len(written) >= 40 or not th.is_alive(), timeout=30)
            time.sleep(1.5)
            browser.save_screenshot(shot)
    finally:
        stop.set()
        th.join(timeout=10)
        server.shutdown()
        server.server_close()
