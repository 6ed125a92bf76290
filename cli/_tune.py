"""`closedloop tune start | status | stop | report`: the Bayesian tuner's jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from closedloop.contracts import ClosedLoopConfig, TuningError, load_config

from ._access import audited
from ._output import JsonOption, print_json, print_table

if TYPE_CHECKING:
    from closedloop.registry import ModelRegistry
    from closedloop.tuner import Method, RunRecord, TuningLoop, TuningStore

tune_app = typer.Typer(
    help="Tune a use case's policy parameters for its product objective (needs the tuner extra).",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The closedloop.yaml to use.", envvar="CLOSEDLOOP_CONFIG")
]
OfflineOption = Annotated[
    bool, typer.Option("--offline", help="The offline run (doubly robust values of logged decisions).")
]


def _tuner(
    config: ClosedLoopConfig,
    use_case: str,
    offline: bool,
    method: str,
    seeds: list[dict[str, Any]] | None = None,
) -> tuple[TuningLoop, TuningStore, ModelRegistry]:
    try:
        from closedloop.tuner import OfflineTuner, OnlineTuner, TuningStore
    except ImportError as exc:
        raise TuningError(
            "The tuner is not installed.", hint="pip install 'closedloop[tuner]' (torch's CPU wheel first)."
        ) from exc
    from closedloop.registry import open_registry

    if use_case not in config.use_cases:
        raise TuningError(
            f"Unknown use case {use_case!r}.",
            field="use_case",
            value=use_case,
            expected=f"one of {sorted(config.use_cases)}",
        )
    chosen = _checked_method(method)
    store = TuningStore.from_url(config.infrastructure.resolved_database_url)
    registry = open_registry(config.infrastructure)
    tuner: TuningLoop
    if offline:
        tuner = OfflineTuner(config, use_case, store=store, registry=registry, method=chosen)
    else:
        tuner = OnlineTuner(
            config, use_case, store=store, registry=registry, method=chosen, seeds=seeds or []
        )
    return tuner, store, registry


def _checked_method(method: str) -> Method:
    if method not in ("bayesian", "random", "grid"):
        raise TuningError(
            f"Unknown tuning method {method!r}.",
            field="method",
            value=method,
            expected="bayesian, random or grid",
        )
    return cast("Method", method)


@tune_app.command("start")
def tune_start(
    use_case: Annotated[str, typer.Argument(help="The use case whose tuning: block to run.")],
    config: ConfigOption = Path("closedloop.yaml"),
    offline: OfflineOption = False,
    method: Annotated[str, typer.Option(help="bayesian (Ax), random or grid.")] = "bayesian",
    seed_from_offline: Annotated[
        bool, typer.Option(help="Start the online run with the offline run's best configurations.")
    ] = False,
    fresh: Annotated[bool, typer.Option(help="Discard an earlier run of this use case and mode.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between checks while a round collects data.")] = 60.0,
) -> None:
    """Run (or resume) a tuning run in the foreground until its rounds are done or it is stopped.
    One process per run: a second `start` of the same use case and mode is refused."""
    loaded = load_config(config)
    _checked_method(method)
    seeds = None
    if seed_from_offline:
        from closedloop.tuner import TuningSpace, TuningStore, offline_seeds

        store = TuningStore.from_url(loaded.infrastructure.resolved_database_url)
        space = TuningSpace.of(use_case, loaded.use_cases[use_case], online=True)
        seeds = offline_seeds(store, use_case, space, space.tuning.arms_per_round)
        store.close()
    tuner, store, registry = _tuner(loaded, use_case, offline, method, seeds)
    with audited(loaded) as (actor, trail):
        trail.record(actor, "tuning.start", use_case, run=tuner.run_name, method=method, fresh=fresh)
    try:
        with store.exclusive(tuner.run_name):
            record = _run_in_foreground(tuner, use_case, fresh=fresh, poll=poll)
    except KeyboardInterrupt:
        typer.echo("interrupted: the run is saved; `closedloop tune start` resumes it")
        return
    finally:
        tuner.close()
        store.close()
        registry.close()
    typer.echo(f"{record.run}: {record.status} after {record.rounds_done} rounds")
    if record.recommendation:
        typer.echo(json.dumps(record.recommendation, indent=2))


def _run_in_foreground(tuner: TuningLoop, use_case: str, *, fresh: bool, poll: float) -> RunRecord:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    record = tuner.begin(fresh=fresh)
    rounds = tuner.space.tuning.rounds
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(f"tuning {use_case}", total=rounds, completed=record.rounds_done)

        def report_step(message: str) -> None:
            done = tuner.record()
            progress.update(task, completed=done.rounds_done if done else 0, description=message[:70])

        return tuner.run(poll_seconds=poll, progress=report_step)


@tune_app.command("status")
def tune_status(
    use_case: Annotated[str | None, typer.Argument(help="Only this use case's runs.")] = None,
    config: ConfigOption = Path("closedloop.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Every tuning run (or one use case's): status, rounds, trials measured, the recommendation."""
    from closedloop.console import tuning_runs

    loaded = load_config(config)
    found = tuning_runs(loaded.infrastructure.resolved_database_url)
    if not found["available"]:
        import closedloop.tuner  # noqa: F401 - raises the missing extra's error, which names its install
    listing = {
        entry["run"]: {key: value for key, value in entry.items() if key != "run"}
        for entry in found["runs"]
        if use_case is None or entry["use_case"] == use_case
    }
    if as_json:
        print_json(listing)
        return
    print_table(
        ["run", "use case", "mode", "method", "status", "rounds", "trials (measured)", "recommendation"],
        [
            [
                run,
                entry["use_case"],
                entry["mode"],
                entry["method"],
                entry["status"],
                entry["rounds_done"],
                f"{entry['trials']} ({entry['trials_measured']})",
                json.dumps(entry["recommendation"]) if entry["recommendation"] else "",
            ]
            for run, entry in listing.items()
        ],
    )


@tune_app.command("stop")
def tune_stop(
    use_case: str, config: ConfigOption = Path("closedloop.yaml"), offline: OfflineOption = False
) -> None:
    """Stop a run: its arms stop serving; `tune start` resumes it later from the same round."""
    loaded = load_config(config)
    tuner, store, registry = _tuner(loaded, use_case, offline, "bayesian")
    try:
        if tuner.record() is None:
            raise TuningError(f"No {'offline' if offline else 'online'} tuning run of {use_case!r} to stop.")
        with audited(loaded) as (actor, trail):
            tuner.stop()
            trail.record(actor, "tuning.stop", use_case, run=tuner.run_name)
    finally:
        store.close()
        registry.close()
    typer.echo(f"{tuner.run_name}: stopped")


@tune_app.command("report")
def tune_report(
    use_case: str,
    config: ConfigOption = Path("closedloop.yaml"),
    offline: OfflineOption = False,
    output: Annotated[Path, typer.Option(help="Directory for tuning.html and tuning.json.")] = Path(
        "closedloop-tuning"
    ),
) -> None:
    """Write the run's report: every trial with intervals, plots, the recommendation."""
    from closedloop.tuner import TuningSpace, TuningStore, tuning_report, write_tuning_report

    loaded = load_config(config)
    if use_case not in loaded.use_cases:
        raise TuningError(f"Unknown use case {use_case!r}.", field="use_case", value=use_case)
    space = TuningSpace.of(use_case, loaded.use_cases[use_case], online=False)
    run = f"{use_case}.{'offline' if offline else 'online'}"
    store = TuningStore.from_url(loaded.infrastructure.resolved_database_url)
    try:
        if store.run(run) is None:
            raise TuningError(f"No tuning run {run!r} yet.", hint=f"closedloop tune start {use_case}")
        html_path, json_path = write_tuning_report(tuning_report(store, run, space), output)
    finally:
        store.close()
    typer.echo(f"wrote {html_path} and {json_path}")
