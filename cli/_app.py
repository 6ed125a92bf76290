"""`closedloop validate | serve | console | train | status | models | experiments | report | tune |
keys | audit | demo`.

Heavy imports happen in the command that uses them, so `closedloop --help` stays fast.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    ConfigError,
    load_config,
    tuning_experiment_name,
)

from ._access import audit, audited, keys_app
from ._errors import missing_package, unreachable_server
from ._export import export
from ._logging import LogFormat, LogFormatOption, LogLevelOption, configure_logging
from ._models import models_app
from ._output import JsonOption, print_json, print_table, when
from ._tune import tune_app

if TYPE_CHECKING:
    from ._serve import TlsFiles

logger = logging.getLogger("closedloop.cli")

app = typer.Typer(
    name="closedloop",
    help="Data-driven decisions in product code, improved from real outcomes.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from closedloop import __version__

        typer.echo(f"closedloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Data-driven decisions in product code, improved from real outcomes."""


ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The closedloop.yaml to use.", envvar="CLOSEDLOOP_CONFIG")
]
CertOption = Annotated[
    Path | None,
    typer.Option(help="Serve HTTPS with this certificate (PEM; with --ssl-keyfile).", exists=True),
]
KeyFileOption = Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).", exists=True)]


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the configuration.")] = Path("closedloop.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite a file that exists.")] = False,
) -> None:
    """Write a commented starter closedloop.yaml, and the JSON Schema beside it for your editor."""
    from importlib import resources

    from closedloop.contracts import SCHEMA_FILE, shipped_json_schema

    if path.exists() and not force:
        raise ConfigError(f"{path} exists; not overwritten.", hint="Pass --force, or another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resources.files(__package__).joinpath("starter.yaml").read_text(encoding="utf-8"))
    (path.parent / SCHEMA_FILE).write_text(shipped_json_schema())
    load_config(path)  # what is written validates
    typer.echo(f"wrote {path} and {path.parent / SCHEMA_FILE}; next: closedloop validate {path}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of closedloop.yaml (for editors: see the README's yaml-language-server line)."""
    from closedloop.contracts import shipped_json_schema

    typer.echo(shipped_json_schema(), nl=False)


@app.command()
def validate(
    config: Annotated[Path, typer.Argument(help="The closedloop.yaml to check.")], as_json: JsonOption = False
) -> None:
    """Check a configuration file; print each use case, or every problem with its field path."""
    loaded = load_config(config)
    if as_json:
        from closedloop.contracts import public_use_cases

        print_json({"file": str(config), "valid": True, "use_cases": public_use_cases(loaded)})
        return
    for name, use_case in loaded.use_cases.items():
        features = len(use_case.context) + len(use_case.candidate)
        typer.echo(
            f"{name}: {use_case.decision}, {features} features, outcomes {sorted(use_case.outcomes)}, "
            f"value = {use_case.policy.value}, exploration = {use_case.policy.exploration.strategy}"
        )
    typer.echo(f"{config}: OK")


@app.command()
def serve(
    config: ConfigOption = Path("closedloop.yaml"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    refresh_interval: Annotated[float, typer.Option(help="Seconds between registry checks.")] = 0.5,
    workers: Annotated[
        int,
        typer.Option(min=1, help="Worker processes; more than one needs Redis and Kafka (shared state)."),
    ] = 1,
    insecure: Annotated[
        bool,
        typer.Option(
            help="Listen beyond loopback even though no API key exists (something else keeps strangers out)."
        ),
    ] = False,
    ssl_certfile: CertOption = None,
    ssl_keyfile: KeyFileOption = None,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Run the decision service (FastAPI under uvicorn); experiment reports: closedloop console."""
    from ._serve import run_service

    run_service(
        config,
        host=host,
        port=port,
        refresh_interval=refresh_interval,
        workers=workers,
        insecure=insecure,
        tls=_tls(ssl_certfile, ssl_keyfile),
        log_level=log_level,
        log_format=log_format,
    )


def _tls(certfile: Path | None, keyfile: Path | None) -> TlsFiles | None:
    from ._serve import TlsFiles

    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise typer.BadParameter("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    return TlsFiles(certfile, keyfile)


LatenessOption = Annotated[
    float,
    typer.Option(
        min=0,
        help="Seconds a window stays open past its end for events on their way (short: for trying it out).",
    ),
]


@app.command()
def train(
    config: ConfigOption = Path("closedloop.yaml"),
    once: Annotated[
        bool, typer.Option("--once", help="One cycle (catch up, close windows, train if due), then exit.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Train every use case now, whatever the retrain trigger says.")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between cycles in the long-running mode.")] = 10.0,
    group: Annotated[
        str | None, typer.Option(help="Kafka consumer group (default: <topic_prefix>.trainer).")
    ] = None,
    lateness: LatenessOption = 60.0,
    as_json: JsonOption = False,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = LogFormat.text,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics (lag, joins, runs) on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Interface of the metrics port.")] = "127.0.0.1",
) -> None:
    """Join logged outcomes to decisions, retrain LightGBM models, gate them and publish champions.
    Each cycle says what it did, and for a use case that did not train, why (what it waits for)."""
    from closedloop.metadata import freeze_startup_objects
    from closedloop.trainer import TrainerMetrics, open_trainer

    configure_logging(log_level, log_format)
    loaded = load_config(config)
    log_start_trainer(loaded, lateness)
    trainer = open_trainer(loaded, group_id=group, lateness=lateness)
    freeze_startup_objects()
    metrics = TrainerMetrics()
    if metrics_port is not None:
        metrics.serve(metrics_port, metrics_host)
        logger.info("trainer metrics on http://%s:%d/metrics", metrics_host, metrics_port)
    try:
        while True:
            report = trainer.run_once(force=force)
            metrics.observe_cycle(report, trainer.store.counters(), trainer.store.newest_decision())
            statuses = [trainer.status(name) for name in loaded.use_cases]
            summary = _cycle_summary(report, statuses)
            if as_json:
                print_json(summary)
            else:
                _log_cycle(summary)
            if once:
                return
            force = False
            time.sleep(interval)
    except KeyboardInterrupt:
        logger.info("trainer stopped")
    finally:
        trainer.close()


def log_start_trainer(config: ClosedLoopConfig, lateness: float) -> None:
    from closedloop.contracts import redact_url

    infrastructure = config.infrastructure
    source = infrastructure.kafka_bootstrap or f"files ({infrastructure.data_path / 'events'})"
    logger.info(
        "trainer starting: events from %s; metadata %s; lateness %gs; use cases %s",
        source,
        redact_url(infrastructure.resolved_database_url),
        lateness,
        ", ".join(config.use_cases),
    )


def _cycle_summary(report: Any, statuses: list[Any]) -> dict[str, Any]:
    return {
        "consumed": dict(report.consumed),
        "leader": report.leader,
        "defaults_applied": report.defaults_applied,
        "runs": [
            {
                "use_case": r.use_case,
                "outcome": r.outcome,
                "version": r.version,
                "promoted": r.promoted,
                "reason": r.reason,
            }
            for r in report.runs
        ],
        "use_cases": {status.use_case: asdict(status) for status in statuses},
    }


def _log_cycle(summary: dict[str, Any]) -> None:
    consumed = ", ".join(f"{k} {v}" for k, v in sorted(summary["consumed"].items())) or "nothing new"
    runs = summary["runs"]
    promoted = sum(1 for r in runs if r["promoted"])
    logger.info(
        "cycle: consumed %s; defaults applied %d; runs %d, promoted %d",
        consumed,
        summary["defaults_applied"],
        len(runs),
        promoted,
    )
    if not summary["leader"]:
        logger.info(
            "another trainer leads (closes windows and trains); this one joined its partitions' events"
        )
        return
    trained = {r["use_case"] for r in runs}
    for name, status in summary["use_cases"].items():
        if name not in trained:
            logger.info("%s", status["explanation"])


@app.command()
def status(
    config: ConfigOption = Path("closedloop.yaml"),
    lateness: LatenessOption = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Per use case: champions, decisions waiting for their windows, final labels against the
    retrain trigger, the last run's verdict, and in words why it did or did not train."""
    from closedloop.registry import open_registry
    from closedloop.trainer import ExampleStore, training_status

    loaded = load_config(config)
    store = ExampleStore.from_url(loaded.infrastructure.resolved_database_url)
    registry = open_registry(loaded.infrastructure)
    try:
        statuses = [training_status(loaded, store, name, lateness=lateness) for name in loaded.use_cases]
        champions = {
            name: registry.champions(name, list(uc.outcomes)) for name, uc in loaded.use_cases.items()
        }
    finally:
        store.close()
        registry.close()
    if as_json:
        print_json([{**asdict(s), "champions": champions[s.use_case]} for s in statuses])
        return
    rows = [
        [
            s.use_case,
            o.outcome,
            champions[s.use_case][o.outcome] or "(default policy)",
            s.decisions_waiting,
            o.final_labels,
            f"{o.new_since_last_run}/{o.needed_for_trigger}",
            when(o.first_window_closes_at),
            o.last_run or "",
        ]
        for s in statuses
        for o in s.outcomes
    ]
    print_table(
        [
            "use case",
            "outcome",
            "champion",
            "waiting",
            "final labels",
            "new/trigger",
            "next window closes",
            "last run",
        ],
        rows,
    )
    for s in statuses:
        typer.echo(s.explanation)


@app.command()
def demo(
    rounds: Annotated[int, typer.Option(min=3, help="Simulated hours of traffic.")] = 12,
    decisions: Annotated[int, typer.Option(min=100, help="Decisions per round.")] = 1500,
    seed: Annotated[int, typer.Option(help="Seed of the simulated product.")] = 0,
    output: Annotated[Path, typer.Option(help="Where the report and the embedded stores go.")] = Path(
        "closedloop-demo"
    ),
    redis_url: Annotated[
        str | None, typer.Option(envvar="CLOSEDLOOP_REDIS_URL", help="Use this Redis.")
    ] = None,
    kafka_bootstrap: Annotated[
        str | None, typer.Option(envvar="CLOSEDLOOP_KAFKA_BOOTSTRAP", help="Use this Kafka.")
    ] = None,
    database_url: Annotated[
        str | None, typer.Option(envvar="CLOSEDLOOP_DATABASE_URL", help="Use this database (SQLAlchemy URL).")
    ] = None,
) -> None:
    """Run the whole loop on a simulated product and write an HTML report (no servers needed)."""
    from closedloop.simulator import run_demo_command

    run_demo_command(
        rounds=rounds,
        decisions=decisions,
        seed=seed,
        output=output,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
    )


experiments_app = typer.Typer(help="Start, change, stop and list experiments.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
app.add_typer(tune_app, name="tune")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.command()(audit)
app.command()(export)


@app.command()
def console(
    config: ConfigOption = Path("closedloop.yaml"),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8001,
    insecure: Annotated[
        bool, typer.Option(help="Listen beyond loopback though no API key exists (see closedloop serve).")
    ] = False,
    ssl_certfile: CertOption = None,
    ssl_keyfile: KeyFileOption = None,
    nice: Annotated[
        int,
        typer.Option(
            min=0,
            max=19,
            help="Scheduling niceness: on a host shared with the decision service, reports take "
            "only the CPU decisions leave (0: as the service).",
        ),
    ] = 10,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = LogFormat.text,
) -> None:
    """Serve experiment reports and admin actions, apart from the decision service."""
    import os

    import uvicorn

    from closedloop.console import create_console
    from closedloop.metadata import freeze_startup_objects

    from ._serve import require_keys_off_loopback, tls_paths

    loaded = load_config(config)
    if not insecure:
        require_keys_off_loopback(loaded, host, command="console")
    certfile, keyfile = tls_paths(_tls(ssl_certfile, ssl_keyfile))
    os.nice(nice)
    app_ = create_console(loaded)
    freeze_startup_objects()  # reports over long logs: a full collection scanned all of it
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )


@experiments_app.command("start")
def experiments_start(
    name: str, config: ConfigOption = Path("closedloop.yaml"), as_json: JsonOption = False
) -> None:
    """Start an experiment as declared (a changed allocation starts a new phase)."""
    from closedloop.evaluation import find_experiment
    from closedloop.registry import open_registry, start_experiment

    loaded = load_config(config)
    use_case_name, use_case, experiment = find_experiment(loaded, name)
    with audited(loaded) as (actor, trail):
        registry = open_registry(loaded.infrastructure)
        try:
            phase = start_experiment(
                registry,
                use_case_name,
                name,
                experiment,
                others=[
                    *(e for e in use_case.experiments if e != name),
                    tuning_experiment_name(use_case_name),
                ],
            )
        finally:
            registry.close()
        trail.record(actor, "experiment.start", name, phase=phase.phase, use_case=use_case_name)
    if as_json:
        print_json(phase.model_dump(mode="json"))
        return
    shares = ", ".join(f"{arm} {spec.share:g}" for arm, spec in phase.arms.items())
    typer.echo(
        f"{name}: phase {phase.phase} running on {use_case_name} ({shares}; holdout {phase.holdout:g})"
    )


@experiments_app.command("stop")
def experiments_stop(
    name: str, config: ConfigOption = Path("closedloop.yaml"), as_json: JsonOption = False
) -> None:
    """Stop an experiment: every unit goes back to the use case's own policy."""
    from closedloop.registry import open_registry, stop_experiment

    loaded = load_config(config)
    with audited(loaded) as (actor, trail):
        registry = open_registry(loaded.infrastructure)
        try:
            phase = stop_experiment(registry, name)
        finally:
            registry.close()
        trail.record(actor, "experiment.stop", name, phase=phase.phase)
    if as_json:
        print_json(phase.model_dump(mode="json"))
        return
    typer.echo(f"{name}: phase {phase.phase} stopped")


@experiments_app.command("list")
def experiments_list(
    name: Annotated[str | None, typer.Argument(help="Only this experiment.")] = None,
    config: ConfigOption = Path("closedloop.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Every declared experiment (or one) with its phases: arms, shares, when started and stopped."""
    from closedloop.evaluation import experiment_listing, find_experiment
    from closedloop.registry import open_registry

    loaded = load_config(config)
    if name is not None:
        find_experiment(loaded, name)  # an unknown name: the error lists the declared ones
    registry = open_registry(loaded.infrastructure)
    try:
        listing = {n: e for n, e in experiment_listing(loaded, registry).items() if name in (None, n)}
    finally:
        registry.close()
    if as_json:
        print_json(listing)
        return
    rows = []
    for experiment, entry in listing.items():
        for phase in entry["phases"] or [None]:
            if phase is None:
                rows.append([experiment, entry["use_case"], "", "not started", "", "", ""])
                continue
            shares = ", ".join(f"{arm} {spec['share']:g}" for arm, spec in phase["arms"].items())
            stopped = phase.get("stopped_at")
            rows.append(
                [
                    experiment,
                    entry["use_case"],
                    phase["phase"],
                    "stopped" if stopped else "running",
                    shares,
                    when(phase.get("started_at")),
                    when(stopped),
                ]
            )
    print_table(["experiment", "use case", "phase", "status", "arms", "started", "stopped"], rows)


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    config: ConfigOption = Path("closedloop.yaml"),
    output: Annotated[Path, typer.Option(help="Directory for report.html and report.json.")] = Path(
        "closedloop-report"
    ),
    phase: Annotated[int | None, typer.Option(help="Which phase (default: the latest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Also print the report's JSON.")] = False,
) -> None:
    """Analyse an experiment from the event logs; write an HTML report, its JSON and its CSV."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from closedloop.evaluation import analyze_experiment, write_report_files
    from closedloop.metadata import freeze_startup_objects

    loaded = load_config(config)
    freeze_startup_objects()  # a full collection in a long analysis scanned every module's objects
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        result = analyze_experiment(
            loaded, experiment, phase=phase, progress=lambda step: progress.update(task, description=step)
        )
    html_path, json_path = write_report_files(result, output)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {html_path}, {json_path} and {output / 'report.csv'}")


def main() -> None:
    """The command; an error the user can fix is one line saying how, never a traceback."""
    try:
        app()
    except ClosedLoopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except ImportError as exc:
        typer.echo(f"error: {missing_package(exc)}", err=True)
        raise SystemExit(2) from None
    except Exception as exc:
        unreachable = unreachable_server(exc)
        if unreachable is None:
            raise
        typer.echo(f"error: {unreachable}", err=True)
        raise SystemExit(2) from None
