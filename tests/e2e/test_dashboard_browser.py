"""The dashboard in a real browser against a running system (`ratchet run` on the sim feed).

Headless Chromium from Debian (/usr/bin/chromium; `make test` installs it when missing), driven
by Playwright's Python package pointed at that binary. An admin logs in, sees a leg appear live
(pushed over the WebSocket, no reload), reads its stop on the chart and sees it move as the price
rises, halts the system through the confirmation; a viewer then finds no halt button; an API key
opens the board with its live feed (the key never in a URL). Every request the page makes must
stay on this machine, and no CSP violation may occur. Screenshots go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from ratchet.servers import free_port
from tests.conftest import private_dir
from tests.e2e.test_ratchet_run import RATCHET, start_run, stop_run, wait_ready

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ADMIN, VIEWER = ("ada", "admin-password-1"), ("val", "viewer-password-1")
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:")
ROTATE_S = 15.0  # chart another symbol when no stop of this one moved for so long


def _playwright() -> Any:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `make test` installs Debian's chromium when run as root")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: `make install` installs the test extras")
    return sync_playwright


def create_user(home: Path, name: str, password: str, role: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATCHET_")}
    env["RATCHET_HOME"] = str(home)
    result = subprocess.run([RATCHET, "users", "create", name, "--role", role,
                             "--password", password], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def stop_on_chart(page: Any, trade_id: str) -> float | None:
    return page.evaluate(
        """(id) => { const l = window.ratchet.chartLines()
                       .find((x) => x.trade_id === id && x.kind === "stop");
                     return l ? l.price : null; }""", trade_id)


def wait_for_stop_in_table(page: Any, trade_id: str, at_least: float) -> None:
    """The table is drawn a frame after the event that the chart shows at once (and a stop only
    rises, so the table may already be past what the chart showed)."""
    page.wait_for_function(
        "([id, p]) => { const r = document.querySelector(`#legs tr[data-trade='${id}'] td.stop`);"
        " return r !== null && parseFloat(r.textContent.replace(/,/g, '')) >= p; }",
        arg=[trade_id, at_least])


def log_in(page: Any, base: str, user: tuple[str, str]) -> None:
    page.goto(base)
    page.fill("#username", user[0])
    page.fill("#password", user[1])
    page.click("#login-submit")
    page.wait_for_selector("#board:not([hidden])")
    page.wait_for_selector("#live.ok")


def watch_a_stop_rise(page: Any, shot: Any, deadline: float) -> tuple[str, float, float]:
    """Chart a symbol with an open leg, read that leg's stop from the chart, and wait until a
    leg's stop on the chart is higher than first read. A leg may exit, or sit still, before its
    stop moves; then the next symbol is charted."""
    first: dict[str, float] = {}
    charted, since, turn = None, time.monotonic(), 0
    while time.monotonic() < deadline:
        legs = page.evaluate("window.ratchet.legs()")
        symbol = page.evaluate("window.ratchet.chartSymbol()")
        stale = time.monotonic() - since > ROTATE_S
        if legs and (symbol not in {leg["symbol"] for leg in legs} or stale):
            turn += 1
            pick = legs[turn % len(legs)]
            page.locator(f'#legs tr[data-trade="{pick["trade_id"]}"]').click()
            symbol, since = pick["symbol"], time.monotonic()
            first.clear()
        for leg in [g for g in legs if g["symbol"] == symbol]:
            price = stop_on_chart(page, leg["trade_id"])
            if price is None:
                continue
            if leg["trade_id"] not in first:
                first[leg["trade_id"]] = price
                if charted is None:
                    charted = symbol
                    wait_for_stop_in_table(page, leg["trade_id"], price)
                    shot("2-stop-on-chart")
            elif price > first[leg["trade_id"]]:
                return leg["trade_id"], first[leg["trade_id"]], price
        time.sleep(0.5)
    raise AssertionError(f"no stop moved up on the chart in time: {first}")


def test_the_dashboard_live_in_a_browser() -> None:
    sync_playwright = _playwright()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    home, port = private_dir("ratchet-test-browser-") / "home", free_port()
    # 20 symbols, not the default 50: on a 2-core machine the whole system at 900x and the
    # browser share the cores.
    proc = start_run(home, port, seed=1, symbols=20)
    profile = Path(tempfile.mkdtemp(prefix="ratchet-chromium-"))
    outside: list[str] = []
    csp_errors: list[str] = []
    try:
        base, _ = wait_ready(proc)
        create_user(home, *ADMIN, "admin")
        create_user(home, *VIEWER, "viewer")
        with sync_playwright() as pw:
            browser = pw.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), args=FLAGS, headless=True,
                viewport={"width": 1280, "height": 900})
            page = browser.pages[0] if browser.pages else browser.new_page()
            # Generous: with the whole system on two cores a click can wait for the renderer.
            page.set_default_timeout(90_000)
            page.on("request", lambda r: None if r.url.startswith(LOCAL) else outside.append(r.url))
            page.on("console", lambda m: csp_errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.on("pageerror", lambda e: csp_errors.append(f"page error: {e}"))
            sockets: list[str] = []
            page.on("websocket", lambda ws: sockets.append(ws.url))

            def shot(name: str) -> None:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

            # An admin logs in; a leg that was not there at login appears without a reload.
            log_in(page, base, ADMIN)
            known = page.evaluate("window.ratchet.legs().map((l) => l.trade_id)")
            shot("1-logged-in")
            page.wait_for_function(
                "(known) => window.ratchet.legs().some((l) => !known.includes(l.trade_id))",
                arg=known, timeout=150_000, polling=250)
            new = page.evaluate(
                "(known) => window.ratchet.legs().find((l) => !known.includes(l.trade_id))", known)
            page.wait_for_selector(f'#legs tr[data-trade="{new["trade_id"]}"]')

            # Its stop on the chart, then a stop that ratchets up as the price rises.
            page.locator(f'#legs tr[data-trade="{new["trade_id"]}"]').click()
            trade_id, before, after = watch_a_stop_rise(page, shot, time.monotonic() + 120)
            assert after > before
            wait_for_stop_in_table(page, trade_id, after)
            shot("3-stop-moved")

            # Halt, through the confirmation; the badge comes back over the feed.
            page.click("#control-halt")
            page.wait_for_selector("#confirm[open]")
            shot("4-halt-confirmation")
            page.click("#confirm-ok")
            page.wait_for_selector("#halted:not([hidden])")
            shot("5-halted")

            # A viewer sees the board and no halt button (nor any control).
            page.click("#signout")
            page.wait_for_selector("#login:not([hidden])")
            log_in(page, base, VIEWER)
            page.wait_for_selector("#halted:not([hidden])")
            page.wait_for_selector("#legs tbody tr")
            assert page.locator("#control-halt").count() == 0
            assert page.locator("#controls").is_hidden()
            shot("6-viewer")
            page.set_viewport_size({"width": 390, "height": 844})
            page.click("#theme")
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "7-viewer-phone-theme.png"), full_page=True)

            # An API key opens the board too; the live feed carries it as a subprotocol, never
            # in its URL (where a proxy would log it).
            page.click("#signout")
            page.wait_for_selector("#login:not([hidden])")
            page.click("#login summary")
            page.fill("#api-key", (home / "admin-key").read_text().strip())
            page.click("#key-form button[type=submit]")
            page.wait_for_selector("#board:not([hidden])")
            page.wait_for_selector("#live.ok")
            page.wait_for_selector("#controls", state="visible")  # the key's role: admin
            assert sockets and not [url for url in sockets if "key" in url], sockets
            browser.close()
    finally:
        stop_run(proc, home)
        shutil.rmtree(profile, ignore_errors=True)
    assert not outside, f"requests left the machine: {outside[:5]}"
    assert not csp_errors, csp_errors[:5]
