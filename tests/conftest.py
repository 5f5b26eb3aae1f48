"""Fixtures shared across the test suite."""

import os
import shutil

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: small convolutions ran up to 100x slower with two threads on a
    shared 2-core machine, and one thread is fairer to whatever else runs there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Headless Chromium for the page tests (tests/report/test_browser.py, tests/watch/test_browser.py):
# Debian's chromium + chromium-driver, found on PATH or named by RESGRAD_CHROMIUM/RESGRAD_CHROMEDRIVER.
CHROMIUM = os.environ.get("RESGRAD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("RESGRAD_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _no_chromium() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for name, path in (("Chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return (f"{name} not found at {path}; install Debian's packages: "
                    "apt-get install -y chromium chromium-driver")
    return None


@pytest.fixture
def chromium(tmp_path, monkeypatch):
    """``chromium(width, height)``: an offline headless Chromium driver, quit after the test
    (skips, with the reason, where selenium or Chromium is missing)."""
    why = _no_chromium()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    drivers = []

    def start(width: int, height: int):
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--window-size={width},{height}"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    try:
        yield start
    finally:
        for d in drivers:
            d.quit()



@pytest.fixture
def resgrad_cli(monkeypatch):
    """``resgrad_cli(*args)``: the ``resgrad`` command run in this process through typer's
    CliRunner -- the same root group and its one-line error handling as ``python -m resgrad``,
    without the ~4 s a fresh interpreter spends importing torch. Returns (exit code, stdout,
    stderr); an exception that escaped the command (what a user would see as a traceback) fails
    the test here. Keep one real subprocess per command for the process-level behaviour."""
    from typer.testing import CliRunner

    from resgrad.cli import app

    monkeypatch.delenv("RESGRAD_DEBUG", raising=False)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        r = runner.invoke(app, list(args))
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise AssertionError(f"resgrad {' '.join(args)} raised {r.exception!r}") from r.exception
        return r.exit_code, r.stdout, r.stderr

    return run
