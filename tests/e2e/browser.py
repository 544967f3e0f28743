"""A real headless Chromium for the e2e tests, driven by Selenium through Debian's
chromedriver (no browser download: Selenium Manager is never asked).

Missing chromium or chromedriver skips the tests that need them, unless
TRIPLINE_REQUIRE_BROWSER=1 (CI) makes that a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
REQUIRE = "TRIPLINE_REQUIRE_BROWSER"


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
        )
        if path is not None:
            return path
    return None


def binaries() -> tuple[str, str]:
    """(chromium, chromedriver); skips, or fails under TRIPLINE_REQUIRE_BROWSER=1."""
    chromium = _find(CHROMIUM_NAMES)
    driver = _find(("chromedriver",))
    missing = [
        name for name, path in (("chromium", chromium), ("chromedriver", driver)) if not path
    ]
    try:
        import selenium  # noqa: F401 - only whether it is installed
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if missing:
        why = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get(REQUIRE) == "1":
            pytest.fail(f"a browser is required ({REQUIRE}=1) but {why}")
        pytest.skip(why)
    assert chromium is not None and driver is not None
    return chromium, driver


def start_chromium(chromium: str, driver: str, downloads: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--window-size=1280,1000",
    ):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads)})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.set_page_load_timeout(30)
    return browser
