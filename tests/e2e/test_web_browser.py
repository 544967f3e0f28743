"""The operator's ticket page in a real browser (headless Chromium through Selenium)
against a real collector process: the queue filters, a ticket shows its timeline, an
ack on the page is what the CLI then shows, and a token scoped to one customer never
sees another's ticket, in the queue or by its URL.

The store is filled before the collector starts, with the same ticket functions the
collector's pipeline uses, so the tickets (and a hostile host name) are known exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, Collector, eventually
from tripline.collector import enrollment, ticketmodel, tickets
from tripline.collector.store import Store

pytestmark = pytest.mark.e2e

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


@dataclass
class Site:
    cluster: Cluster
    collector: Collector
    tickets: dict[str, int]  # name -> ticket id
    secrets: dict[str, str]  # API token name -> secret

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.collector.http_port}/ui{path}"


def _seed(data_dir: Path) -> dict[str, int]:
    """Three tickets: acme's disk (open), acme's memory (acknowledged), globex's disk."""
    data_dir.mkdir(mode=0o700, parents=True)
    store = Store(f"sqlite:///{data_dir / 'tripline.db'}")
    store.migrate()
    now = time.time()
    found: dict[str, int] = {}
    agents = {}
    for customer, host in (("acme", HOSTILE), ("globex", "gx-pc-01")):
        with store.transaction() as conn:
            _, secret = enrollment.create_token(conn, customer, now=now)
        with store.transaction() as conn:
            agents[customer], _ = enrollment.enroll_agent(
                conn, secret, hostname=host, site="hq", inventory={"os": "Windows 11"}, now=now
            )
    with store.transaction() as conn:
        for name, customer, rule, severity in (
            ("acme-disk", "acme", "DiskFull", "warning"),
            ("acme-memory", "acme", "MemoryLow", "critical"),
            ("globex-disk", "globex", "DiskFull", "warning"),
        ):
            agent = agents[customer]
            found[name] = tickets.on_alert_firing(
                conn,
                customer=customer,
                agent_id=agent.agent_id,
                hostname=agent.hostname,
                rule=rule,
                labels=(),
                severity=severity,
                tier=1,
                summary=f"{customer} {rule}",
                runbook="Empty the recycle bin and temp folders.",
                value=0.97,
                threshold=0.9,
                context={"top_cpu": [{"pid": 4, "name": "backup.exe", "cpu_ratio": 0.8}]},
                now=now,
                policy=ticketmodel.TicketPolicy(),
            ).ticket_id
        tickets.acknowledge(conn, found["acme-memory"], actor="night-shift", now=now)
    store.close()
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    cluster = Cluster(tmp_path_factory.mktemp("web"))
    try:
        found = _seed(cluster.tmp / "collector")
        collector = cluster.collector().start()
        collector.wait_ready()
        secrets = {}
        for name, scope in (("ops-all", ()), ("ops-acme", ("--customer", "acme"))):
            created = cluster.cli(
                "api-tokens", "create", "--name", name, *scope,
                "--data-dir", str(collector.data_dir),
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            secrets[name] = created.stdout.strip().splitlines()[-1]
        yield Site(cluster, collector, found, secrets)
    finally:
        cluster.close()


def login(browser: Any, site: Site, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(site.url("/login"))
    browser.find_element(By.ID, "token").send_keys(site.secrets[token])
    browser.find_element(By.ID, "login").click()
    try:
        eventually(lambda: browser.find_elements(By.ID, "queue"), 15, "the queue after login")
    except AssertionError:
        print(f"--- {browser.current_url} ---\n{browser.page_source}")  # why, in the report
        raise


def text_of(browser: Any, element_id: str) -> str:
    """The element's text, "" while the page is between documents (a form's POST, its
    redirect, the next GET): polled during a navigation, the element may be gone."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def queue_rows(browser: Any) -> set[int] | None:
    """The queue's ticket ids; None while the page is between documents (a filter's
    submit replaces the page under the rows being read: polled, that is "not yet")."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        rows = browser.find_elements(By.CSS_SELECTOR, "#queue tr.ticket")
        return {int(row.get_attribute("data-ticket")) for row in rows}
    except StaleElementReferenceException:
        return None


def test_the_queue_lists_tickets_and_filters_them(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    login(browser, site, "ops-all")
    assert queue_rows(browser) == set(site.tickets.values())

    # the status filter applies as soon as it changes (the page's script submits it)
    Select(browser.find_element(By.ID, "f-status")).select_by_value("acknowledged")
    eventually(
        lambda: queue_rows(browser) == {site.tickets["acme-memory"]}, 15, "acknowledged only"
    )
    assert "status=acknowledged" in browser.current_url

    # without the script's help too: type a customer, press the button
    Select(browser.find_element(By.ID, "f-status")).select_by_value("")
    eventually(lambda: len(queue_rows(browser) or ()) == 3, 15, "every ticket again")
    browser.find_element(By.ID, "f-customer").send_keys("globex")
    browser.find_element(By.ID, "apply").click()
    eventually(lambda: queue_rows(browser) == {site.tickets["globex-disk"]}, 15, "globex only")
    Select(browser.find_element(By.ID, "f-severity")).select_by_value("critical")
    eventually(lambda: browser.find_elements(By.ID, "empty"), 15, "no globex critical")
    # the page's own script and style ran under its Content-Security-Policy, unblocked
    blocked = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []


def test_an_ack_on_the_page_shows_in_the_cli_and_hostile_text_stays_text(
    browser: Any, site: Site
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    login(browser, site, "ops-all")
    ticket = site.tickets["acme-disk"]
    browser.find_element(By.CSS_SELECTOR, f'#queue tr[data-ticket="{ticket}"] a').click()
    eventually(lambda: browser.find_elements(By.ID, "timeline"), 15, "the ticket page")
    timeline = browser.find_element(By.ID, "timeline").text
    assert "opened by tripline" in timeline
    assert browser.find_element(By.ID, "host").text.startswith(HOSTILE)  # shown, not run
    assert "Empty the recycle bin" in browser.find_element(By.ID, "runbook").text
    assert "backup.exe" in browser.find_element(By.ID, "top_cpu").text

    browser.find_element(By.ID, "ack").click()
    eventually(lambda: browser.find_elements(By.ID, "done"), 15, "the ack's confirmation")
    assert browser.find_element(By.ID, "status").text == "acknowledged"
    shown = site.cluster.ticket(site.collector.data_dir, ticket)
    assert shown["status"] == "acknowledged" and shown["acknowledged_by"] == "ops-all"

    comment = f"<script>document.title='pwned'</script>{HOSTILE}"
    browser.find_element(By.ID, "comment-text").send_keys(comment)
    browser.find_element(By.ID, "comment").click()
    eventually(lambda: comment in text_of(browser, "timeline"), 15, "comment")
    assert browser.title != "pwned"
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no dialog is open
    events = site.cluster.ticket(site.collector.data_dir, ticket)["events"]
    assert [e["kind"] for e in events][-2:] == ["acknowledged", "commented"]
    assert events[-1]["message"] == comment and events[-1]["actor"] == "ops-all"


def test_a_customer_token_sees_no_other_customers_ticket(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    login(browser, site, "ops-acme")
    assert queue_rows(browser) == {site.tickets["acme-disk"], site.tickets["acme-memory"]}
    assert "gx-pc-01" not in browser.page_source

    theirs = site.tickets["globex-disk"]
    browser.get(site.url(f"/tickets/{theirs}"))
    assert browser.find_element(By.ID, "error").text == f"no ticket {theirs}"
    assert "gx-pc-01" not in browser.page_source and "globex" not in browser.page_source

    # logging out ends the session: the queue asks for a token again
    browser.get(site.url("/tickets"))
    browser.find_element(By.ID, "logout").click()
    eventually(lambda: browser.find_elements(By.ID, "token"), 15, "the login form")
    browser.get(site.url("/tickets"))
    assert browser.find_elements(By.ID, "token")


def test_the_service_report_renders_its_charts_and_only_for_the_tokens_customers(
    browser: Any, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    login(browser, site, "ops-acme")
    browser.find_element(By.ID, "r-customer").send_keys("acme")
    browser.find_element(By.ID, "open-report").click()
    eventually(lambda: browser.find_elements(By.TAG_NAME, "svg"), 15, "the report's charts")
    # the charts are drawn (inline SVG with a size), not just present in the markup
    charts = browser.find_elements(By.TAG_NAME, "svg")
    assert len(charts) >= 2
    assert all(c.size["width"] > 100 and c.size["height"] > 50 for c in charts)
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "acme" in text and "DiskFull" in text and "MemoryLow" in text
    assert "gx-pc-01" not in browser.page_source
    assert browser.title != "pwned"
    # its inline style ran under the report's own policy; nothing was blocked
    blocked = [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert blocked == []

    browser.get(site.url("/reports?customer=globex"))
    assert browser.find_element(By.ID, "error").text == "no customer 'globex'"
    assert "gx-pc-01" not in browser.page_source
