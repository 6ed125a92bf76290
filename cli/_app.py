"""`closedloop validate | serve | console | train | models | experiments | report | tune | keys |
audit | demo`.

Heavy imports happen in the command that uses them, so `closedloop --help` stays fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from closedloop.contracts import ClosedLoopConfig, ClosedLoopError, load_config, tuning_experiment_name

from ._access import audit, audited, keys_app

if TYPE_CHECKING:
    from ._serve import TlsFiles
from ._tune import tune_app

app = typer.Typer(
    name="closedloop",
    help="Data-driven decisions in product code, improved from real outcomes.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The closedloop.yaml to use.", envvar="CLOSEDLOOP_CONFIG")
]
CertOption = Annotated[
    Path | None,
    typer.Option(help="Serve HTTPS with this certificate (PEM; with --ssl-keyfile).", exists=True),
]
KeyFileOption = Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).", exists=True)]


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="The closedloop.yaml to check.")]) -> None:
    """Check a configuration file; print each use case, or every problem with its field path."""
    loaded = load_config(config)
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
    )


def _tls(certfile: Path | None, keyfile: Path | None) -> TlsFiles | None:
    from ._serve import TlsFiles

    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        raise typer.BadParameter("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    return TlsFiles(certfile, keyfile)


@app.command()
def models(config: ConfigOption = Path("closedloop.yaml")) -> None:
    """List the registry's models (versions, champions, metrics, lineage) and the training runs."""
    from closedloop.registry import open_registry

    loaded = load_config(config)
    registry = open_registry(loaded.infrastructure)
    listing: dict[str, object] = {
        name: {
            outcome: {
                "champion": registry.champion(name, outcome),
                "versions": [dict(v.metadata) for v in registry.versions(name, outcome)],
            }
            for outcome in use_case.outcomes
        }
        for name, use_case in loaded.use_cases.items()
    }
    listing["training_runs"] = _training_runs(loaded)
    typer.echo(json.dumps(listing, indent=2, default=str))


def _training_runs(config: ClosedLoopConfig) -> list[dict[str, object]]:
    try:
        from closedloop.trainer import ExampleStore
    except ImportError:  # the trainer's extra is not installed here
        return []
    store = ExampleStore.from_url(config.infrastructure.resolved_database_url)
    try:
        return [{k: v for k, v in asdict(run).items() if k != "report"} for run in store.runs()]
    finally:
        store.close()


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
) -> None:
    """Join logged outcomes to decisions, retrain LightGBM models, gate them and publish champions."""
    from rich.console import Console

    from closedloop.trainer import open_trainer

    console = Console(stderr=True)
    trainer = open_trainer(load_config(config), group_id=group, progress=lambda message: console.log(message))
    try:
        while True:
            with console.status("catching up on the event log and training"):
                report = trainer.run_once(force=force)
            consumed = ", ".join(f"{k} {v}" for k, v in sorted(report.consumed.items())) or "nothing new"
            console.log(
                f"consumed: {consumed}; defaults applied: {report.defaults_applied}; "
                f"runs: {len(report.runs)}, promoted: {len(report.promoted)}"
            )
            if once:
                return
            force = False
            time.sleep(interval)
    except KeyboardInterrupt:
        console.log("stopped")
    finally:
        trainer.close()


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
app.command()(audit)


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
) -> None:
    """Serve experiment reports and admin actions, apart from the decision service."""
    import os

    import uvicorn

    from closedloop.console import create_console

    from ._serve import require_keys_off_loopback, tls_paths

    loaded = load_config(config)
    if not insecure:
        require_keys_off_loopback(loaded, host, command="console")
    certfile, keyfile = tls_paths(_tls(ssl_certfile, ssl_keyfile))
    os.nice(nice)
    app_ = create_console(loaded)
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
def experiments_start(name: str, config: ConfigOption = Path("closedloop.yaml")) -> None:
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
    shares = ", ".join(f"{arm} {spec.share:g}" for arm, spec in phase.arms.items())
    typer.echo(
        f"{name}: phase {phase.phase} running on {use_case_name} ({shares}; holdout {phase.holdout:g})"
    )


@experiments_app.command("stop")
def experiments_stop(name: str, config: ConfigOption = Path("closedloop.yaml")) -> None:
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
    typer.echo(f"{name}: phase {phase.phase} stopped")


@experiments_app.command("list")
def experiments_list(config: ConfigOption = Path("closedloop.yaml")) -> None:
    """Every declared experiment with its phases (as JSON)."""
    from closedloop.evaluation import experiment_listing
    from closedloop.registry import open_registry

    loaded = load_config(config)
    registry = open_registry(loaded.infrastructure)
    try:
        listing = experiment_listing(loaded, registry)
    finally:
        registry.close()
    typer.echo(json.dumps(listing, indent=2))


@app.command()
def report(
    experiment: Annotated[str, typer.Argument(help="The experiment's name.")],
    config: ConfigOption = Path("closedloop.yaml"),
    output: Annotated[Path, typer.Option(help="Directory for report.html and report.json.")] = Path(
        "closedloop-report"
    ),
    phase: Annotated[int | None, typer.Option(help="Which phase (default: the latest).")] = None,
) -> None:
    """Analyse an experiment from the event logs; write an HTML report and its JSON."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from closedloop.evaluation import analyze_experiment, write_report_files

    loaded = load_config(config)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("starting", total=None)
        result = analyze_experiment(
            loaded, experiment, phase=phase, progress=lambda step: progress.update(task, description=step)
        )
    html_path, json_path = write_report_files(result, output)
    for note in result.notes:
        typer.echo(f"note: {note}")
    typer.echo(f"wrote {html_path} and {json_path}")


def main() -> None:
    try:
        app()
    except ClosedLoopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
