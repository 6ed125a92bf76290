"""`closedloop validate | serve | models`: heavy imports happen inside the command that needs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from closedloop.contracts import ClosedLoopError, load_config

app = typer.Typer(
    name="closedloop",
    help="Data-driven decisions in product code, improved from real outcomes.",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The closedloop.yaml to use.", envvar="CLOSEDLOOP_CONFIG")
]


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
) -> None:
    """Run the decision service (FastAPI under uvicorn)."""
    import uvicorn

    from closedloop.decision_service import create_app

    service = create_app(load_config(config), refresh_interval=refresh_interval)
    uvicorn.run(service, host=host, port=port, log_level="info", access_log=False)


@app.command()
def models(config: ConfigOption = Path("closedloop.yaml")) -> None:
    """List the registry's models: versions, champions and their metadata."""
    from closedloop.registry import open_registry

    loaded = load_config(config)
    registry = open_registry(loaded.infrastructure)
    listing = {
        name: {
            outcome: {
                "champion": registry.champion(name, outcome),
                "versions": [dict(v.metadata) for v in registry.versions(name, outcome)],
            }
            for outcome in use_case.outcomes
        }
        for name, use_case in loaded.use_cases.items()
    }
    typer.echo(json.dumps(listing, indent=2, default=str))


def main() -> None:
    try:
        app()
    except ClosedLoopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
