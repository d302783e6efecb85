"""The console's browser tests: fixtures.

Each test gets a fresh browser context (Debian's Chromium, headless) whose every request is
checked: anything not addressed to loopback is aborted and recorded, and the test fails if
there was any (the console needs no outside network). Console errors and uncaught page
errors fail the test too, except the ones a test provokes on purpose and clears.
"""

import json
import os
import pathlib
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlparse

import pytest
from playwright.sync_api import sync_playwright

API = os.environ["STACK_API"]
OPERATOR = os.environ["STACK_OPERATOR_CREDENTIAL"]
SHOTS = pathlib.Path(os.environ.get("BROWSER_SCREENSHOTS", ".local/screenshots"))
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def call(method, path, token=None, body=None):
    """A plain API call (as a customer's own code would make it): (status, JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            text = resp.read()
            return resp.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, (json.loads(text) if text else None)


def ok(status_body, *want):
    status, body = status_body
    assert status in (want or (200, 201)), (status, body)
    return body


def fresh_account(name, grant_pack="pack_10000"):
    """A new enterprise account with credits and a key with every scope: (id, key)."""
    run = uuid.uuid4().hex[:10]
    acct = ok(call("POST", "/admin/v1/accounts", OPERATOR, {
        "request_id": f"{name}-{run}", "name": f"{name} {run}", "plan": "enterprise",
        "retention_days": 90, "max_concurrency": 4, "min_batch_size": 1,
    }))["id"]
    ok(call("POST", f"/admin/v1/accounts/{acct}/grants", OPERATOR, {
        "request_id": f"{name}-{run}-credits", "pack": grant_pack, "reason": "browser tests",
    }))
    key = ok(call("POST", f"/admin/v1/accounts/{acct}/api-keys", OPERATOR, {
        "request_id": f"{name}-{run}-key", "name": name, "scopes": ["read", "batches:write", "admin"],
    }))["secret"]
    return acct, key


@pytest.fixture(scope="session")
def account():
    """A fresh enterprise account with credits, an admin key and a read-only key."""
    run = uuid.uuid4().hex[:10]
    acct = ok(call("POST", "/admin/v1/accounts", OPERATOR, {
        "request_id": f"browser-{run}", "name": f"浏览器测试 Browser Co {run}", "plan": "enterprise",
        "retention_days": 90, "max_concurrency": 8, "min_batch_size": 1,
    }))["id"]
    ok(call("POST", f"/admin/v1/accounts/{acct}/grants", OPERATOR, {
        "request_id": f"browser-{run}-credits", "pack": "pack_10000", "reason": "browser tests",
    }))
    admin = ok(call("POST", f"/admin/v1/accounts/{acct}/api-keys", OPERATOR, {
        "request_id": f"browser-{run}-admin", "name": "console admin",
        "scopes": ["read", "batches:write", "admin"],
    }))["secret"]
    read = ok(call("POST", f"/admin/v1/accounts/{acct}/api-keys", OPERATOR, {
        "request_id": f"browser-{run}-read", "name": "finance (read)", "scopes": ["read"],
    }))["secret"]
    return {"id": acct, "admin": admin, "read": read, "run": run}


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


class Watched:
    """A page and what it did that it should not have."""

    def __init__(self, page, outside, errors):
        self.page = page
        self.outside = outside
        self.errors = errors

    def open(self, route="", lang="en"):
        self.page.goto(f"{API}/console{route}")
        self.page.select_option("#lang", lang)

    def shot(self, name, lang):
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{lang}-{name}.png"), full_page=True)


@pytest.fixture
def watched(browser):
    context = browser.new_context(accept_downloads=True, locale="en-US", timezone_id="Asia/Shanghai")
    outside, errors = [], []

    def guard(route):
        host = urlparse(route.request.url).hostname or ""
        if host in LOOPBACK:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(20_000)
    w = Watched(page, outside, errors)
    yield w
    context.close()
    assert not outside, f"requests that left loopback: {outside}"
    assert not errors, f"browser console errors: {errors}"


def open_account_as_operator(w, acct):
    """Signs in as the operator and opens one account's panel by its id."""
    w.open("#/operator")
    w.page.fill("#credential", OPERATOR)
    w.page.click("form button[type=submit]")
    w.page.fill("#account-id", acct)
    w.page.click("form.filters button[type=submit]")


def sign_in(w, key):
    w.page.fill("#key", key)
    w.page.click("form button[type=submit]")
    w.page.wait_for_selector("#nav a[data-route=overview]")
