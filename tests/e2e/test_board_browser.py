"""The status board in a real browser (Debian's headless chromium, driven by Playwright) against a
running ``pingstream up``: real pings, projector, monitor and ClickHouse behind the page.

No skip: a machine without chromium fails these tests (``make test`` installs it).
Screenshots go to tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from bench.procs import Service, free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
PHONE = {"width": 390, "height": 844}


def call(system, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(system.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Api-Key": key or system.keys["api_key"]})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if r.headers.get_content_type() == "application/json" else text
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ping(system, check: dict, suffix: str = "") -> None:
    status, _ = call(system, "POST", f"/ping/{check['uuid']}{suffix}")
    assert status == 200


def wait_for(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return value


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A running system with three named checks: runs (one failed), a flip down and up, tags.
    One for the module (tests that add checks remove them); stopped even when a test fails."""
    s = Service("up", {"PINGSTREAM_DATA": str(tmp_path_factory.mktemp("board") / "data"), "PINGSTREAM_KAFKA": ""},
                free_port())
    try:
        s.start()
        yield setup(s)
    finally:
        s.stop()


def setup(s: Service) -> tuple[Service, dict]:
    checks = {}
    for name, tags in (("nightly-backup", "prod db"), ("weekly-report", "prod"), ("staging-sync", "staging")):
        status, doc = call(s, "POST", "/api/v3/checks/", {"name": name, "tags": tags, "timeout": 3600, "grace": 600})
        assert status == 201, doc
        checks[name] = doc
    backup = checks["nightly-backup"]
    for outcome in ("", "/fail", ""):  # three runs, the second fails: the check flips up, down, up
        ping(s, backup, "/start")
        time.sleep(0.3)
        ping(s, backup, outcome)
    ping(s, checks["weekly-report"])

    def projected():
        status, doc = call(s, "GET", f"/api/v3/checks/{backup['uuid']}/flips/")
        flipped = status == 200 and len(doc["flips"]) >= 3
        status, doc = call(s, "GET", f"/api/v3/checks/{backup['uuid']}")
        return flipped and doc["n_pings"] == 6
    wait_for(projected)
    return s, checks


class Console:
    """Every console error and uncaught exception of a page, and every URL it requested."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.api_keys: set[str] = set()
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", self._request)

    def _request(self, request) -> None:
        self.urls.append(request.url)
        if "x-api-key" in request.headers:
            self.api_keys.add(request.headers["x-api-key"])


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"page is {width}px wide"


def test_the_board_lists_checks_by_name_and_filters_by_tag(board, browser):
    system, checks = board
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto(f"{system.url}/board/#key={system.keys['api_key_readonly']}")
    rows = page.locator("#checks tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#checks td.name a")).to_have_text(["nightly-backup", "staging-sync", "weekly-report"])
    expect(rows.filter(has_text="nightly-backup").locator(".status")).to_have_text("up")
    expect(rows.filter(has_text="staging-sync").locator(".status")).to_have_text("new")
    expect(rows.filter(has_text="staging-sync").locator("td.last")).to_have_text("never")
    expect(rows.filter(has_text="weekly-report").locator("td.next")).to_contain_text("in ")
    shoot(page, "board.png")

    page.get_by_role("button", name="prod", exact=True).click()
    expect(page.locator("#checks td.name a")).to_have_text(["nightly-backup", "weekly-report"])
    assert "tag=prod" in page.url
    page.get_by_role("button", name="all").click()
    expect(rows).to_have_count(3)

    assert console.errors == []
    # The key went only as a header, never in a URL a server could log.
    assert console.api_keys == {system.keys["api_key_readonly"]}
    assert not [u for u in console.urls if system.keys["api_key_readonly"] in u.split("#")[0]]


def test_a_checks_page_shows_its_chart_runs_flips_and_pings(board, browser):
    system, checks = board
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto(f"{system.url}/board/#key={system.keys['api_key_readonly']}")
    page.get_by_role("link", name="nightly-backup").click()
    expect(page.locator("#check-name")).to_have_text("nightly-backup")
    for series in ("p50", "p95", "p99"):  # the chart is drawn: one point per quantile at least
        assert page.locator(f"#chart svg path#series-{series}").get_attribute("d").startswith("M")
    assert page.locator("#chart svg circle").count() >= 3
    runs = page.locator("#runs tbody tr")
    expect(runs).to_have_count(3)
    expect(page.locator("#runs tbody tr.fail")).to_have_count(1)
    expect(page.locator("#runs tbody tr.fail")).to_contain_text("failed")
    expect(page.locator("#timeline svg rect.down")).to_have_count(1)
    assert page.locator("#flips li").count() >= 3
    pings = page.locator("#pings tbody tr")
    expect(pings).to_have_count(6)
    expect(pings.first).to_contain_text("success")
    assert page.locator("#chart svg").bounding_box()["height"] > 100
    shoot(page, "board-check.png")

    # A range without runs: the chart says so, the runs table too.
    page.locator("#since").fill("2020-01-01")
    page.locator("#since").dispatch_event("change")
    page.locator("#until").fill("2020-01-07")
    page.locator("#until").dispatch_event("change")
    expect(page.locator("#runs tbody")).to_contain_text("no runs in this range")
    expect(page.locator("#chart svg")).to_contain_text("no runs in this range")
    assert console.errors == []


def test_an_unknown_check_is_a_404(board, browser):
    system, _ = board
    page = browser.new_page()
    key = system.keys["api_key_readonly"]
    response = page.goto(f"{system.url}/board/checks/{uuid.uuid4()}#key={key}")
    assert response.status == 404
    expect(page.locator("#missing")).to_be_visible()
    expect(page.locator("#missing h1")).to_contain_text("404")
    page.goto(f"{system.url}/board/#key={key}&check={uuid.uuid4()}")
    expect(page.locator("#missing")).to_be_visible()


def test_a_checks_own_url_opens_its_page_by_uuid_with_a_read_only_key(board, browser):
    system, checks = board
    page = browser.new_page()
    console = Console(page)
    backup = checks["nightly-backup"]
    response = page.goto(f"{system.url}/board/checks/{backup['uuid']}#key={system.keys['api_key_readonly']}")
    assert response.status == 200
    expect(page.locator("#check-name")).to_have_text("nightly-backup")
    page.locator("#back").click()
    expect(page.locator("#checks tbody tr")).to_have_count(3)
    assert console.errors == []


def test_the_board_refreshes_by_itself(board, browser):
    system, _ = board
    page = browser.new_page()
    console = Console(page)
    page.goto(f"{system.url}/board/#key={system.keys['api_key_readonly']}&refresh=1")
    expect(page.locator("#checks tbody tr")).to_have_count(3)
    status, doc = call(system, "POST", "/api/v3/checks/", {"name": "added-later"})
    assert status == 201
    try:
        expect(page.locator("#checks td.name a", has_text="added-later")).to_be_visible(timeout=10_000)
    finally:
        assert call(system, "DELETE", f"/api/v3/checks/{doc['uuid']}")[0] == 200
    expect(page.locator("#checks tbody tr")).to_have_count(3, timeout=10_000)
    assert console.errors == []


def test_it_reads_well_at_phone_width(board, browser):
    system, checks = board
    page = browser.new_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    console = Console(page)
    key = system.keys["api_key_readonly"]
    page.goto(f"{system.url}/board/#key={key}")
    expect(page.locator("#checks tbody tr")).to_have_count(3)
    no_horizontal_scroll(page)
    assert page.locator("#checks thead").is_hidden()  # cards instead of columns
    shoot(page, "board-phone.png")
    page.goto(f"{system.url}/board/#key={key}&check={checks['nightly-backup']['uuid']}")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    no_horizontal_scroll(page)
    assert page.locator("#chart svg").bounding_box()["width"] <= PHONE["width"]
    shoot(page, "board-check-phone.png")
    assert console.errors == []


def test_without_a_key_it_asks_for_one_and_a_wrong_key_says_so(board, browser):
    system, _ = board
    page = browser.new_page()
    page.goto(f"{system.url}/board/")
    expect(page.locator("#login")).to_be_visible()
    page.locator("#key").fill("not-a-key-of-any-project")
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#error")).to_contain_text("does not open")
    page.locator("#key").fill(system.keys["api_key_readonly"])
    page.get_by_role("button", name="Open").click()
    expect(page.locator("#checks tbody tr")).to_have_count(3)
