"""What `closedloop demo` prints and writes: a progress bar while the loop runs, then the summary."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._demo import Demo, DemoResult, demo_config, fresh_demo_directory, run_id
from ._report import write_report


def run_demo_command(
    *,
    rounds: int,
    decisions: int,
    seed: int,
    output: Path,
    redis_url: str | None = None,
    kafka_bootstrap: str | None = None,
    database_url: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    data = fresh_demo_directory(output)
    # On shared servers every run gets names of its own, so runs never mix their data.
    run = run_id()
    config = demo_config(
        data_dir=str(data),
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        database_url=database_url,
        key_prefix=f"closedloop-demo-{run}",
        topic_prefix=f"closedloop-demo-{run}",
    )
    schema = f"closedloop_demo_{run}" if database_url and database_url.startswith("postgresql") else None
    stores = ", ".join(
        f"{name}: {value}"
        for name, value in (("redis", redis_url), ("kafka", kafka_bootstrap), ("database", database_url))
        if value
    )
    console.print(
        f"[bold]closedloop demo[/] — {rounds} simulated hours x {decisions} decisions; "
        f"stores: {stores or 'embedded (files under ' + str(data) + ')'}"
    )
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    demo = Demo(
        config,
        seed=seed,
        consumer_config={
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "max_poll_interval_ms": 10_000,
        },
        database_schema=schema,
        progress=lambda message: progress.console.log(message),
    )
    try:
        with progress:
            task = progress.add_task("decisions", total=rounds * decisions)
            result = demo.run(rounds, decisions, on_decision=lambda: progress.advance(task))
    finally:
        demo.close()
    html_path, json_path = write_report(result, output)
    _print_summary(console, result)
    console.print(f"report: {html_path}\nnumbers: {json_path}")
    return result


def _print_summary(console: Console, result: DemoResult) -> None:
    evaluation = result.evaluation
    table = Table(title=f"Expected reward per decision on {evaluation['requests']} fresh requests (95% CI)")
    table.add_column("policy")
    table.add_column("reward", justify="right")
    table.add_column("95% interval", justify="right")
    for label, key in (
        ("default policy", "default"),
        ("learned policy", "learned"),
        ("oracle", "oracle"),
        ("learned - default", "lift_over_default"),
    ):
        value = evaluation[key]
        table.add_row(label, f"{value['estimate']:.3f}", f"[{value['low']:.3f}, {value['high']:.3f}]")
    console.print(table)
    console.print(
        f"The learned policy reaches {100 * evaluation['share_of_oracle']:.1f}% of the oracle's reward."
    )
    promoted = [run for run in result.runs if run.promoted]
    console.print(f"Training runs: {len(result.runs)}, promoted: {len(promoted)}.")
