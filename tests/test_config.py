from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from closedloop.contracts import ConfigError, load_config, parse_config, parse_duration

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
use_cases:
  feed:
    decision: choose
    candidate: {price: {type: numeric}}
    outcomes: {click: {type: binary, window: 30m}}
    policy: {value: click}
"""


def test_the_example_configuration_is_valid() -> None:
    config = load_config(ROOT / "examples" / "closedloop.yaml", environ={})
    assert config.use_cases["home_feed"].decision == "rank"
    assert config.use_cases["push_notification"].policy.default.action == "no"
    assert config.infrastructure.redis_url is None


def test_an_error_names_the_file_and_the_field_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL.replace("window: 30m", "window: soon"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    assert "use_cases.feed.outcomes.click.window" in message
    assert "'soon'" in message


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (("value: click", "value: clik"), "not declared outcomes"),
        (("value: click", "value: __import__('os')"), "only outcome names"),
        (("decision: choose", "decision: pick"), "use_cases.feed.decision"),
        (("type: numeric", "type: number"), "use_cases.feed.candidate.price"),
        (("policy: {value: click}", "policy: {value: click, temperature: 1}"), "temperature"),
        # closedloop's own columns: a ranking's slot, a yes/no decision's answer
        (("decision: choose\n    candidate: {price", "decision: rank\n    candidate: {slot"), "'slot'"),
        (("decision: choose\n    candidate: {price", "decision: binary\n    context: {action"), "'action'"),
    ],
)
def test_bad_files_fail_with_what_was_expected(change: tuple[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match="not a valid closedloop configuration") as caught:
        parse_config(MINIMAL.replace(*change), source="x.yaml", environ={})
    assert fragment in str(caught.value)


def test_environment_variables_expand_and_override() -> None:
    text = MINIMAL + "infrastructure:\n  redis_url: ${MY_REDIS:-}\n  key_prefix: fromfile\n"
    config = parse_config(text, environ={"MY_REDIS": "redis://r:6379/0", "CLOSEDLOOP_KEY_PREFIX": "fromenv"})
    assert config.infrastructure.redis_url == "redis://r:6379/0"
    assert config.infrastructure.key_prefix == "fromenv"
    assert parse_config(text, environ={}).infrastructure.redis_url is None


def test_an_unset_variable_without_default_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\$\{NOPE\}"):
        parse_config(MINIMAL + "infrastructure: {redis_url: '${NOPE}'}\n", environ={})


def test_durations() -> None:
    assert parse_duration("90s").total_seconds() == 90
    assert parse_duration("24h").total_seconds() == 86400
    assert parse_duration(5).total_seconds() == 5
    with pytest.raises(ValueError, match="positive"):
        parse_duration("0s")


def test_validate_command_reports_ok_and_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from closedloop.cli import app

    runner = CliRunner()
    good = runner.invoke(app, ["validate", str(ROOT / "examples" / "closedloop.yaml")])
    assert good.exit_code == 0, good.output
    assert "home_feed: rank" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("binary", "boolean"))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code != 0
    assert "use_cases.feed.outcomes.click.type" in str(result.exception)


@pytest.mark.parametrize(
    "value",
    [
        "click + 1/0",  # divides by zero whatever the predictions
        "click * 1e308 * 10",  # overflows
        "-" * 10_000 + "click",  # nests beyond any parser
        " + ".join(["click"] * 100_000),  # a hundred thousand terms
    ],
)
def test_a_value_function_that_cannot_work_is_refused_at_load(value: str) -> None:
    text = (
        "use_cases:\n  pick:\n    decision: choose\n    outcomes:\n      click: {type: binary, window: 1h}\n"
        f"    policy:\n      value: {value!r}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert "use_cases.pick.policy.value" in str(caught.value)


def test_an_error_says_what_it_got_once_and_names_paths_as_the_file_writes_them() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "closedloop.yaml").read_text())
    use_case = raw["use_cases"]["home_feed"]
    use_case["outcomes"]["click"]["window"] = "30 minutes"
    use_case["policy"]["exploration"] = {"strategy": "epsilon_greedy", "epsilon": 5}
    use_case["context"]["country"]["values"] = []
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump(raw), environ={})
    message = str(refused.value)
    assert message.count("30 minutes") == 1
    assert "use_cases.home_feed.policy.exploration.epsilon:" in message
    assert "epsilon_greedy.epsilon" not in message
    assert "use_cases.home_feed.context.country.values:" in message


def test_validate_prints_each_use_case_or_its_shape_as_json() -> None:
    import json

    from typer.testing import CliRunner

    from closedloop.cli import app

    runner = CliRunner()
    table = runner.invoke(app, ["validate", str(ROOT / "examples" / "closedloop.yaml")])
    assert "home_feed: rank" in table.output
    shown = json.loads(
        runner.invoke(app, ["validate", str(ROOT / "examples" / "closedloop.yaml"), "--json"]).output
    )
    assert shown["valid"] is True
    assert shown["use_cases"]["home_feed"]["decision"] == "rank"
