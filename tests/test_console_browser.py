"""The console in a real headless browser (Debian's chromium driven by Playwright), on a trained
model, an experiment and the trainer's store: every page renders without a console error, its
numbers are the JSON API's, signing in with a key works, and an admin rolls a champion back."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import Server
from playwright.sync_api import Page, sync_playwright
from test_evaluation_experiment import T0, offer_config, run_experiment

from closedloop.access import create_key, open_key_store
from closedloop.console import create_console
from closedloop.registry import open_registry, pin_champion, unpin_champion
from closedloop.trainer import open_trainer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
PAGES = ["/", "/use-cases/offer", "/training", "/traffic", "/tuning", "/v1/experiments"]

pytestmark = pytest.mark.integration


def _open(page: Page, url: str, errors: list[str], shot: str) -> None:
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, (url, response.status)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{shot}.png"), full_page=True)
    assert not errors, (url, errors)


def test_every_console_page_renders_matches_the_json_and_an_admin_rolls_back(
    tmp_path: Path, serve: Callable[[object], Server]
) -> None:
    config = offer_config(tmp_path)
    run_experiment(config, units=600, decisions_per_unit=2)
    trainer = open_trainer(config, clock=lambda: (T0 + timedelta(days=2)).timestamp(), lateness=0)
    trainer.run_once(force=True, timeout=0)
    trainer.close()
    registry = open_registry(config.infrastructure)
    versions = registry.versions("offer", "buy")
    assert len(versions) == 2  # the experiment's model, then the one trained on its data
    assert versions[-1].metadata["lineage"]["parent_version"] == versions[0].version
    pin_champion(registry, "offer", "buy", versions[-1].version)  # whatever the gate said of it
    unpin_champion(registry, "offer", "buy")
    champion = registry.champion("offer", "buy")
    store = open_key_store(config.infrastructure)
    reader = create_key(store, "reader", ["read"]).token
    admin = create_key(store, "admin", ["admin"]).token
    store.close()
    server = serve(create_console(config))
    headers = {"Authorization": f"Bearer {reader}"}
    api = httpx.get(f"{server.url}/v1/models", headers=headers, timeout=30).json()
    training = httpx.get(f"{server.url}/v1/training", headers=headers, timeout=30).json()
    assert api["use_cases"]["offer"]["buy"]["champion"] == champion

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{server.url}/training")  # no key yet: the sign-in page, then back
        assert "/login" in page.url
        page.fill("input[name=key]", "cl_000000000000_" + "z" * 43)
        page.click("#sign-in")
        assert "was not accepted" in page.content()
        page.fill("input[name=key]", reader)
        page.click("#sign-in")
        assert page.url.endswith("/training")

        for path in PAGES:
            _open(page, f"{server.url}{path}", errors, path.strip("/").replace("/", "-") or "index")

        _open(page, f"{server.url}/docs", errors, "docs")  # Swagger UI from the wheel, no CDN
        page.wait_for_selector(".opblock", timeout=15_000)
        assert page.eval_on_selector_all(".opblock", "nodes => nodes.length") >= 8
        assert not errors, errors

        page.goto(f"{server.url}/")
        assert page.text_content("[data-key='champion.offer.buy']").strip() == champion  # type: ignore[union-attr]
        decisions = sum(b["decisions"] for b in training["traffic"]["offer"])
        assert decisions == 1200
        assert page.text_content("[data-key='decisions.offer']").strip() == str(decisions)  # type: ignore[union-attr]
        page.goto(f"{server.url}/training")
        for name, value in training["counters"].items():
            assert page.text_content(f"[data-key='counter.{name}']").strip() == str(value)  # type: ignore[union-attr]
        rows = page.eval_on_selector_all("#runs tr", "rows => rows.length - 1")
        assert rows == len(training["runs"])
        page.goto(f"{server.url}/traffic")
        assert page.eval_on_selector_all("img", "nodes => nodes.map(n => n.naturalWidth)")[0] > 100

        page.goto(f"{server.url}/use-cases/offer")
        assert page.query_selector("#rollback-buy") is None  # a reader sees no admin buttons
        page.context.clear_cookies()
        page.goto(f"{server.url}/login?next=/use-cases/offer")
        page.fill("input[name=key]", admin)
        page.click("#sign-in")
        page.click("#rollback-buy")
        page.wait_for_url(f"{server.url}/use-cases/offer")
        _open(page, page.url, errors, "after-rollback")
        shown = page.text_content("[data-key='champion.buy']").strip()  # type: ignore[union-attr]
        browser.close()
    assert shown == versions[0].version
    assert registry.champion("offer", "buy") == versions[0].version
    assert registry.pinned("offer", "buy") == versions[0].version
    trail = httpx.get(f"{server.url}/v1/audit", headers={"Authorization": f"Bearer {admin}"}).json()
    assert trail[0]["action"] == "champion.rollback"
    registry.close()
