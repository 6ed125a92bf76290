"""Bayesian (Ax) vs random search vs a grid, online, on a simulated product with a known optimum.

Each run is the real online tuner: its rounds are served as experiment arms by the in-process
engine (local registry, embedded event files, SQLite), users respond by the hidden truth of
`closedloop.simulator` (tuning world: purchase weight x epsilon, maximise purchases with clicks
>= 0.9 x status quo), and the causal evaluator measures each round. After every round the
recommendation is scored by the oracle. Prints, per method over the seeds: the true objective of
the recommendation per round (relative to the optimum), the rounds until it is within 2% of the
optimum, and how often the recommendation breaks the true click constraint.

    cd bench && ../.venv/bin/python tuner.py [--seeds 10] [--rounds 8] [--units 1500]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rich.progress import Progress

from closedloop.registry import open_registry
from closedloop.sdk import EmbeddedClient
from closedloop.simulator import SimulatedClock, TuningWorld, drive_online_tuner, tuning_config
from closedloop.tuner import METHODS, OnlineTuner, TuningStore

START = 1_790_000_000.0
BAND = 0.02


def one_run(
    method: str, seed: int, rounds: int, units: int, optimum: float, floor: float
) -> dict[str, object]:
    directory = Path(tempfile.mkdtemp(prefix=f"tune-{method}-{seed}-"))
    config = tuning_config(data_dir=str(directory))
    tuning = config.use_cases["offer"].tuning
    assert tuning is not None
    tuning = tuning.model_copy(update={"rounds": rounds, "min_units_per_arm": units, "seed": seed})
    use_case = config.use_cases["offer"].model_copy(update={"tuning": tuning})
    config = config.model_copy(update={"use_cases": {"offer": use_case}})
    world = TuningWorld(config, seed=seed)
    registry = open_registry(config.infrastructure)
    world.publish_models(registry)
    clock = SimulatedClock(START)
    client = EmbeddedClient(config, seed=seed, clock=clock.datetime)
    store = TuningStore.from_url(config.infrastructure.resolved_database_url)
    tuner = OnlineTuner(config, "offer", store=store, registry=registry, method=method, clock=clock.timestamp)  # type: ignore[arg-type]
    tuner.begin()
    trace: list[dict[str, float | bool]] = []

    def score(round_: int) -> None:
        chosen = tuner.recommendation()["configurations"]
        if chosen:
            p = chosen[0]["parameters"]
            truth = world.true_metrics(p["value.purchase_weight"], p["exploration.epsilon"])
        else:
            truth = world.status_quo()  # nothing feasible yet: the recommendation is to change nothing
        trace.append(
            {
                "round": round_,
                "ratio": truth["purchase"] / optimum,
                "violates": truth["click"] < floor,
                "violates_by_1pct": truth["click"] < 0.99 * floor,
            }
        )

    drive_online_tuner(tuner, world, client, clock, on_round=score)
    tuner.close()
    client.close()
    store.close()
    registry.close()
    within = [t["round"] for t in trace if float(t["ratio"]) >= 1.0 - BAND and not t["violates_by_1pct"]]
    return {"trace": trace, "rounds_to_band": within[0] if within else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--units", type=int, default=1500)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", type=Path, default=None, help="Also write every run's trace here.")
    args = parser.parse_args()
    world = TuningWorld(tuning_config(), seed=0)
    optimum, where = world.optimum()
    floor = 0.9 * world.status_quo()["click"]
    print(f"optimum: purchase rate {optimum:.5f} at {where}; click floor {floor:.5f}")
    methods = args.methods.split(",")
    results: dict[str, list[dict[str, object]]] = {m: [] for m in methods}
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task("tuning runs", total=len(methods) * args.seeds)
        for seed in range(args.seeds):
            for method in methods:
                results[method].append(one_run(method, seed, args.rounds, args.units, optimum, floor))
                progress.advance(task)
    print(
        f"{len(methods) * args.seeds} runs in {time.perf_counter() - started:.0f} s; "
        f"{args.rounds} rounds x 3 arms + status quo, {args.units} units per arm\n"
    )
    print("mean true objective of the recommendation / optimum, by round:")
    print("method    " + " ".join(f"r{r:<5}" for r in range(1, args.rounds + 1)))
    for method, runs in results.items():
        means = [statistics.mean(float(run["trace"][r]["ratio"]) for run in runs) for r in range(args.rounds)]  # type: ignore[index]
        print(f"{method:<9} " + " ".join(f"{m:.3f} " for m in means))
    print(
        "\nrounds to within 2% of the optimum, clicks within 1% of the floor (never: counted as rounds + 1):"
    )
    for method, runs in results.items():
        reached = [run["rounds_to_band"] for run in runs]
        counted = [r if r is not None else args.rounds + 1 for r in reached]
        final = [run["trace"][-1] for run in runs]  # type: ignore[index]
        print(
            f"{method:<9} mean {statistics.mean(counted):.2f} (reached in {sum(r is not None for r in reached)}/{len(runs)}); "
            f"final recommendation breaks the click constraint in {sum(bool(f['violates']) for f in final)}/{len(runs)} runs, "
            f"by more than 1% in {sum(bool(f['violates_by_1pct']) for f in final)}/{len(runs)}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
