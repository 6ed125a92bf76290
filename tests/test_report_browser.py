"""The experiment report in a real headless browser (Debian's chromium driven by Playwright):
it renders without console errors, and the numbers it shows are the numbers of report.json."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from test_evaluation_experiment import T0, offer_config, run_experiment

from closedloop.evaluation import analyze_experiment, write_report_files

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


def lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def shown(value: Any, text: str) -> bool:
    """Whether the page's text is the JSON value as the page formats it (3-5 significant digits)."""
    if value is None:
        return text == "\u2013"  # the page's &ndash;
    if isinstance(value, bool):
        return text.lower() in {"true", "pass", "false", "fail"}
    if isinstance(value, (int, float)) and text == "<0.001":  # a p-value as the page shows it
        return value < 0.001
    if isinstance(value, (int, float)) and text.startswith("now"):  # a decision that can be made now
        return value == 0
    if isinstance(value, (int, float)) and text.endswith((" min", " h", " days")):
        number, unit = text.split()
        return value == pytest.approx(
            float(number) * {"min": 60, "h": 3600, "days": 86400}[unit], rel=0.06, abs=31
        )
    if isinstance(value, (int, float)):
        number = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        return number == pytest.approx(value, rel=5e-3, abs=1e-12)
    if isinstance(value, list):
        return text == (", ".join(value) or "none")
    return text == str(value)


@pytest.mark.integration
def test_report_renders_without_errors_and_matches_its_json(tmp_path: Path) -> None:
    config = offer_config(tmp_path, sequential=True)
    run_experiment(config, units=2000, decisions_per_unit=2)
    report = analyze_experiment(config, "by_quality", as_of=(T0 + timedelta(days=2)).timestamp())
    html_path, json_path = write_report_files(report, tmp_path / "report")
    data = json.loads(json_path.read_text())
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(html_path.as_uri())
        cells = page.eval_on_selector_all(
            "[data-key]", "nodes => nodes.map(n => [n.dataset.key, n.textContent.trim()])"
        )
        images = page.eval_on_selector_all("img", "nodes => nodes.map(n => n.naturalWidth)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "experiment-report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(images) >= 3
    assert all(width > 100 for width in images)
    keys = {key for key, _ in cells}
    for required in (
        "metrics.0.comparisons.0.lift.estimate",
        "heterogeneity.0.gains",
        "ope.policies.0.doubly_robust.estimate",
        "metrics.0.comparisons.0.sequential.low",
    ):
        assert required in keys
    mismatched = [(key, text, lookup(data, key)) for key, text in cells if not shown(lookup(data, key), text)]
    assert mismatched == []
