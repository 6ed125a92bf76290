"""`closedloop models [--json]` and `closedloop models pin|rollback|unpin`: the registry's versions,
champions and lineage, and what an operator does to a champion (each recorded in the audit trail)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from closedloop.contracts import load_config

from ._access import ConfigOption, audited
from ._output import JsonOption, print_json, print_table, when

if TYPE_CHECKING:
    from closedloop.registry import ChampionChange

models_app = typer.Typer(
    help="Registry versions, champions and lineage; pin, roll back or unpin a champion.",
    invoke_without_command=True,
)


@models_app.callback()
def models(
    context: typer.Context,
    config: ConfigOption = Path("closedloop.yaml"),
    use_case: Annotated[str | None, typer.Option(help="Only this use case.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List each use case's models: the champion (pinned or not), every version with its status,
    held-out metric and the gate's reason; --json adds the full lineage and the training runs."""
    if context.invoked_subcommand is not None:
        return
    from closedloop.console import model_listing, training_overview
    from closedloop.registry import open_registry

    loaded = load_config(config)
    registry = open_registry(loaded.infrastructure)
    try:
        listing = model_listing(loaded, registry, use_case)
    finally:
        registry.close()
    if as_json:
        database = loaded.infrastructure.resolved_database_url
        print_json({**listing, "training_runs": training_overview(database)["runs"]})
        return
    rows = []
    for name, outcomes in listing["use_cases"].items():
        for outcome, entry in outcomes.items():
            for version in reversed(entry["versions"][-5:]):
                rows.append(_version_row(name, outcome, entry, version))
            if not entry["versions"]:
                rows.append([name, outcome, "(none yet)", "", "", "", "", "the default policy serves"])
    print_table(
        ["use case", "outcome", "version", "status", "published", "rows", "held-out metrics", "gate"], rows
    )


def _version_row(name: str, outcome: str, entry: dict[str, Any], version: dict[str, Any]) -> list[Any]:
    from closedloop.console import version_summary

    shown = version_summary(version, entry["champion"], entry["pinned"])
    published = when(version["metadata"].get("published_at"))
    return [
        name,
        outcome,
        shown["version"],
        shown["status"],
        published,
        shown["rows"],
        shown["metrics"],
        shown["gate"][:90],
    ]


UseCaseArgument = Annotated[str, typer.Argument(help="The use case.")]
OutcomeArgument = Annotated[str, typer.Argument(help="The outcome whose model it is.")]


@models_app.command("pin")
def models_pin(
    use_case: UseCaseArgument,
    outcome: OutcomeArgument,
    version: Annotated[str, typer.Argument(help="The version to serve, e.g. v3-1a2b3c4d.")],
    config: ConfigOption = Path("closedloop.yaml"),
) -> None:
    """Serve this version and keep it: the trainer publishes challengers as held, not champions."""
    from closedloop.registry import pin_champion

    _change(config, "champion.pin", lambda registry: pin_champion(registry, use_case, outcome, version))


@models_app.command("rollback")
def models_rollback(
    use_case: UseCaseArgument, outcome: OutcomeArgument, config: ConfigOption = Path("closedloop.yaml")
) -> None:
    """Serve the champion's predecessor again, pinned (closedloop models unpin lets training promote)."""
    from closedloop.registry import roll_back_champion

    _change(config, "champion.rollback", lambda registry: roll_back_champion(registry, use_case, outcome))


@models_app.command("unpin")
def models_unpin(
    use_case: UseCaseArgument, outcome: OutcomeArgument, config: ConfigOption = Path("closedloop.yaml")
) -> None:
    """Let the trainer promote challengers again."""
    from closedloop.registry import unpin_champion

    _change(config, "champion.unpin", lambda registry: unpin_champion(registry, use_case, outcome))


def _change(config_path: Path, action: str, change: Any) -> None:
    from closedloop.registry import open_registry

    loaded = load_config(config_path)
    with audited(loaded) as (actor, trail):
        registry = open_registry(loaded.infrastructure)
        try:
            done: ChampionChange = change(registry)
        finally:
            registry.close()
        target = f"{done.use_case}/{done.outcome}"
        trail.record(
            actor, action, target, previous=done.previous, champion=done.champion, pinned=done.pinned
        )
    pinned = " (pinned)" if done.pinned else " (not pinned: training may promote)"
    typer.echo(f"{target}: champion {done.champion}{pinned}; was {done.previous}")
