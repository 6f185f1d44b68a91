"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver (the same package version as the browser, so the pair always fits,
and nothing is downloaded).

Without Chromium the test skips, saying why; under CI (``CI`` set) a missing browser fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.dashboard_page import fmt
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, HOSTILE, Shop

LAUNCH_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
]
SCREENSHOT = Path(tempfile.gettempdir()) / "omnicast-dashboard.png"



def submit_and_wait(browser: Any, button_css: str, ready: Any) -> None:
    """Click a form's submit button, wait until the old document is gone, then until ``ready``
    holds on the new one (asking the new page too early races the navigation: Chromium answers
    "node does not belong to the document")."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")

    def gone(_: Any) -> bool:
        # staleness_of, but asking about the old node mid-navigation may get Chromium's "does
        # not belong to the document" instead of a stale reference: that too says it is gone
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    browser.find_element(By.CSS_SELECTOR, button_css).click()
    WebDriverWait(browser, 20).until(gone)
    WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException, WebDriverException)).until(ready)

def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{path} not found: run 'make browser' (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[dev]'"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="omnicast-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*LAUNCH_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _severe(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _cells(row: Any) -> dict[str, tuple[str, str]]:
    """data-field -> (raw data-value, text shown) for one table row."""
    from selenium.webdriver.common.by import By

    return {c.get_attribute("data-field"): (c.get_attribute("data-value"), c.text)
            for c in row.find_elements(By.CSS_SELECTOR, "[data-field]")}


def _as_number(raw: str) -> float | None:
    return None if raw == "" else float(raw)


@pytest.fixture(scope="module")
def signed_in(browser: Any, shop: Shop) -> dict[str, Any]:
    """Sign in through the form the way a person does; returns the JSON the page was made from."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(shop.url + "/admin/dashboard")
    assert browser.find_elements(By.CSS_SELECTOR, "form.login input#key")
    assert not browser.find_elements(By.ID, "funnel")  # nothing measured is shown before sign-in
    login_log = _severe(browser)
    # the only complaint on the sign-in page is its own 401 status (the key is missing)
    assert all("401" in e["message"] for e in login_log), login_log
    browser.find_element(By.ID, "key").send_keys(shop.admin_key)
    submit_and_wait(browser, "form.login button[type=submit]", ec.presence_of_element_located((By.ID, "funnel")))
    assert browser.current_url == shop.url + "/admin/dashboard"
    status, _, body = shop.admin("/admin/dashboard/data")
    assert status == 200
    return json.loads(body)


def test_the_key_never_reaches_a_url_and_the_session_cookie_is_not_the_key(browser, shop, signed_in):
    assert shop.admin_key not in browser.current_url
    cookie = browser.get_cookie("omnicast_dashboard")
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin/dashboard"
    assert shop.admin_key not in cookie["value"]


def test_funnel_in_the_page_equals_the_json(browser, signed_in):
    from selenium.webdriver.common.by import By

    stages = signed_in["funnel"]
    assert [s["stage"] for s in stages] == ["sent", "delivered", "opened", "clicked", "converted"]
    assert stages[0]["count"] > 0 and stages[3]["count"] > 0 and stages[4]["count"] > 0
    rows = browser.find_elements(By.CSS_SELECTOR, "#funnel tr[data-stage]")
    assert [r.get_attribute("data-stage") for r in rows] == [s["stage"] for s in stages]
    for row, stage in zip(rows, stages, strict=True):
        cells = _cells(row)
        for field, kind in (("count", "count"), ("of_previous", "percent"), ("of_sent", "percent")):
            raw, shown = cells[field]
            assert _as_number(raw) == stage[field], (stage["stage"], field)
            assert shown == fmt(stage[field], kind), (stage["stage"], field)
    # the headline tiles are the totals
    tile = browser.find_element(By.CSS_SELECTOR, "#totals [data-field=sent]")
    assert tile.text == fmt(signed_in["totals"]["sent"], "count") == fmt(stages[0]["count"], "count")


def test_a_kpi_row_in_the_page_equals_the_json(browser, signed_in):
    from selenium.webdriver.common.by import By

    from chalicelib.dashboard_page import KPI_COLUMNS

    welcome = max(signed_in["kpis"]["journey"], key=lambda r: r["revenue"])  # the row with the most in it
    assert welcome["sent"] > 0 and welcome["clicked"] > 0 and welcome["revenue"] > 0 and welcome["ctr"] > 0
    row = browser.find_element(By.CSS_SELECTOR, f'#kpis-journey tr[data-key="{welcome["name"]}"]')
    cells = _cells(row)
    assert set(cells) == {f for f, _, _ in KPI_COLUMNS}
    for field, _, kind in KPI_COLUMNS:
        raw, shown = cells[field]
        assert _as_number(raw) == welcome[field], field
        assert shown == fmt(welcome[field], kind, signed_in["currency"]), field
    rows = browser.find_elements(By.CSS_SELECTOR, "#kpis-channel tr[data-key]")
    shown_rows = [r.get_attribute("data-key") for r in rows]
    assert shown_rows == [r["name"] for r in signed_in["kpis"]["channel"]]


def test_lift_text_in_the_page_equals_the_json(browser, signed_in):
    from selenium.webdriver.common.by import By

    lifts = signed_in["lift"]
    assert lifts, "the seeded shop has a 30% holdout: there must be a lift"
    shown = browser.find_elements(By.CSS_SELECTOR, "#lift .lift")
    assert len(shown) == len(lifts)
    for element, item in zip(shown, lifts, strict=True):
        text = element.find_element(By.CLASS_NAME, "lifttext").text
        assert text == item["text"]
        numbers = [float(n) for n in re.findall(r"[+-]\d+\.\d", text)]
        assert numbers == [round(item["value"] * 100, 1), round(item["low"] * 100, 1), round(item["high"] * 100, 1)]
        assert f"{item['confidence']:.0%} CI" in text
        assert item["low"] <= item["value"] <= item["high"]


def test_the_experiment_in_the_page_equals_the_json(browser, signed_in):
    from selenium.webdriver.common.by import By

    (experiment,) = signed_in["experiments"]
    assert experiment["journey"] == "subject_test" and experiment["control"] == "control"
    block = browser.find_element(By.CSS_SELECTOR, '#experiments .experiment[data-journey="subject_test"]')
    rows = block.find_elements(By.CSS_SELECTOR, "tr[data-key]")
    assert [r.get_attribute("data-key") for r in rows] == [v["variant"] for v in experiment["variants"]]
    for row, variant in zip(rows, experiment["variants"], strict=True):
        cells = _cells(row)
        assert _as_number(cells["units"][0]) == variant["units"] > 0
        assert cells["rate"][1] == fmt(variant["rate"], "percent")
        assert row.find_element(By.CSS_SELECTOR, "td.text").text == (variant["text"] or "—")
        assert cells["probability_to_beat_control"][1] == fmt(variant["probability_to_beat_control"], "percent")
    challenger = next(v for v in experiment["variants"] if not v["control"])
    assert challenger["text"] and challenger["low"] <= challenger["difference"] <= challenger["high"]


def test_names_from_users_are_printed_as_text(browser, signed_in):
    from selenium.webdriver.common.by import By

    keys = [r.get_attribute("data-key") for r in browser.find_elements(By.CSS_SELECTOR, "#kpis-journey tr[data-key]")]
    assert HOSTILE in keys
    rows = browser.find_elements(By.CSS_SELECTOR, "#kpis-journey tr[data-key]")
    header = next(r for r in rows if r.get_attribute("data-key") == HOSTILE).find_element(By.TAG_NAME, "th")
    assert header.text == HOSTILE
    assert browser.title != "pwned"
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []


def test_no_console_errors_and_a_screenshot(browser, shop, signed_in):
    from selenium.webdriver.common.by import By

    _severe(browser)  # what the sign-in left behind was checked there
    browser.get(shop.url + "/admin/dashboard")  # a fresh load with the session cookie
    assert browser.find_element(By.ID, "lift")
    assert _severe(browser) == []
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(height) + 40, 6000))
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000  # a rendered page, not a blank one


def test_the_period_form_narrows_the_page_like_the_json(browser, shop, signed_in):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(shop.url + "/admin/dashboard")
    # a date input's typing format depends on the locale: set the value as the form would send it
    browser.execute_script("document.querySelector('input[name=since]').value = '2026-03-03'")
    submit_and_wait(browser, "form.period button[type=submit]",
                    ec.text_to_be_present_in_element((By.ID, "period"), "2026-03-03"))
    assert browser.current_url.endswith("/admin/dashboard?since=2026-03-03&until=")
    data = json.loads(shop.admin("/admin/dashboard/data?since=2026-03-03")[2])
    cells = browser.find_elements(By.CSS_SELECTOR, "#funnel td[data-field=count]")
    counts = [c.get_attribute("data-value") for c in cells]
    assert [_as_number(c) for c in counts] == [s["count"] for s in data["funnel"]]
    assert data["funnel"][0]["count"] < signed_in["funnel"][0]["count"]
    assert _severe(browser) == []


def test_sign_out_ends_the_session(browser, shop, signed_in):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    browser.get(shop.url + "/admin/dashboard")
    submit_and_wait(browser, "header form.sign-out button[type=submit]",
                    ec.presence_of_element_located((By.CSS_SELECTOR, "form.login input#key")))
    assert browser.get_cookie("omnicast_dashboard") is None
    browser.get(shop.url + "/admin/dashboard/data")
    assert '"unauthorized"' in browser.page_source
