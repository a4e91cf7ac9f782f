"""The web page in real headless Chromium: no console errors, a runbook run from the
page, what a viewer is not offered, and screenshots of the main pages."""

from __future__ import annotations

from typing import Any

import pytest

from agent.store.runbooks import FINAL
from tests.support.wait import wait_for
from tests.web.browser import browser, console_errors, log_in, screenshot, wait_until
from tests.web.conftest import Site

__all__ = ["browser"]  # the fixture, imported for the tests below

pytestmark = pytest.mark.real


def by_id(driver: Any, ident: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.ID, ident)


def test_every_main_page_loads_without_console_errors(site: Site, browser: Any) -> None:
    incident = site.agent.store.incidents.find(open_only=True)[0]
    log_in(browser, site.url, site.tokens["operator"])
    pages = {"overview": "/", "target-cpu": "/checks/cpu?period=24h",
             "target-web": "/checks/web?target=api&period=6h",
             "incident": f"/incidents/{incident.id}", "runbooks": "/runbooks",
             "runbook-form": "/runbooks/hello", "overview-ja": "/?lang=ja"}
    for name, path in pages.items():
        browser.get(f"{site.url}{path}")
        assert browser.find_element("tag name", "h1").text, name
        assert console_errors(browser) == [], name
        screenshot(browser, name)
    browser.get(f"{site.url}/checks/cpu?period=24h")
    assert browser.find_elements("css selector", "figure.chart svg polyline")


def test_a_runbook_is_dry_run_then_run_from_the_page(site: Site, browser: Any) -> None:
    from selenium.webdriver.support.ui import Select

    log_in(browser, site.url, site.tokens["operator"])
    browser.get(f"{site.url}/runbooks/hello")
    by_id(browser, "f-target")[0].send_keys("localhost")
    by_id(browser, "f-greeting")[0].send_keys("hello from the page")
    Select(by_id(browser, "f-mood")[0]).select_by_value("loud")
    by_id(browser, "dry-run")[0].click()
    confirm = wait_until(browser, lambda d: by_id(d, "confirm-run"), "the dry-run plan")
    assert browser.find_elements("css selector", 'tr[data-step="say"]')
    assert console_errors(browser) == []
    screenshot(browser, "run-dry")
    confirm[0].click()
    wait_until(browser, lambda d: "succeeded" in d.find_element("id", "run-state").text,
               "the run to succeed")
    steps = [row.get_attribute("data-step")
             for row in browser.find_elements("css selector", "tr.step")]
    assert steps == ["say", "settle", "verify"] or steps[:2] == ["say", "settle"], steps
    assert "hello from the page (loud)" in browser.page_source
    assert console_errors(browser) == []
    screenshot(browser, "run")
    runs = site.agent.store.runbooks.recent(10)
    assert [(r.dry_run, r.state, r.requested_by) for r in runs] == [
        (False, "succeeded", "operator-bob"), (True, "planned", "operator-bob")]


def test_a_viewer_sees_no_run_or_ack_button(site: Site, browser: Any) -> None:
    agent = site.agent
    now = agent.clock.now()
    planned = agent.store.runbooks.create(runbook="hello", target="localhost",
                                          params={"greeting": "hi"}, trigger="manual",
                                          incident_id=None, requested_by="someone",
                                          dry_run=True, state="scheduled", scheduled_for=now,
                                          now=now)
    wait_for(lambda: agent.store.runbooks.get(planned).state in FINAL,  # type: ignore[union-attr]
             what="the dry run")
    incident = agent.store.incidents.find(open_only=True)[0]
    log_in(browser, site.url, site.tokens["viewer"])
    browser.get(f"{site.url}/incidents/{incident.id}")
    assert by_id(browser, "timeline") and not by_id(browser, "ack")
    assert not by_id(browser, "severity-change")
    screenshot(browser, "incident-viewer")
    browser.get(f"{site.url}/runbooks/hello")
    assert not by_id(browser, "dry-run")
    browser.get(f"{site.url}/runs/{planned}")
    assert by_id(browser, "run-state") and not by_id(browser, "confirm-run")
    assert console_errors(browser) == []
