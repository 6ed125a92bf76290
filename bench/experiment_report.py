"""Time and memory of an experiment report over 1,000,000 logged decisions (embedded event files).

The decisions are written straight into the event log in the shape the engine logs them (5
candidates, 3 context and 2 candidate features, epsilon-greedy propensities, two arms and a
holdout), with feedback for about a fifth of them; then `analyze_experiment` reads and analyses
the phase. Prints the seconds of each step and the peak resident memory of the analysis.

Then what a polling tuner pays: ``--poll-decisions`` more decisions are logged, and the seconds of
an `ExperimentWatch` poll (which had read the log before) are compared with a fresh analysis of
the whole log, both without the detailed parts (as the tuner asks).

    cd bench && ../.venv/bin/python experiment_report.py [--decisions 1000000] [--poll-decisions 10000]
        [--events-dir DIR]  # keep the events and analyse them again in a later run (A/B)

The events are written by a process of its own; the peak memory printed is that of the analysis
and its worker processes together (`closedloop.evaluation` decodes a long log in workers), as
proportional set sizes (a page shared by N processes counts 1/N: the workers share their imported
modules with the fork server) and, beside it, resident sizes summed (shared pages in each).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import resource
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import psutil
from rich.progress import track

from closedloop.contracts import (
    ClosedLoopConfig,
    DecisionEvent,
    FeedbackEvent,
    LoggedCandidate,
    encode_decision,
    encode_feedback,
    parse_config,
)
from closedloop.evaluation import ExperimentWatch, analyze_experiment, write_report_files
from closedloop.eventlog import FileEventLog
from closedloop.metadata import freeze_startup_objects
from closedloop.registry import LocalModelRegistry, start_experiment

CONFIG = """
use_cases:
  shop:
    decision: choose
    context:
      country: {type: categorical, values: [us, de, fr, uk]}
      device: {type: categorical, values: [ios, android, web]}
      tenure: {type: numeric}
    candidate:
      price: {type: numeric}
      quality: {type: numeric}
    outcomes:
      buy: {type: binary, window: 1h}
      revenue: {type: continuous, window: 1h}
    policy:
      value: buy + 0.01 * revenue
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
    experiments:
      big:
        arms:
          control: {share: 0.5, control: true, policy: default}
          model: {share: 0.5}
        holdout: 0.05
        sequential: true
"""
T0 = datetime(2026, 11, 1, tzinfo=UTC)
CANDIDATES = 5


def write_events(directory: Path, decisions: int, units: int, seed: int = 0, first: int = 0) -> None:
    """``decisions`` decisions numbered from ``first`` on (half a second apart), with their feedback."""
    rng = np.random.default_rng(seed)
    log = FileEventLog(directory / "events", fsync_interval=5.0)
    arms = ["control", "model"]
    unit_country = rng.integers(0, 4, units)
    unit_device = rng.integers(0, 3, units)
    batch_decisions: list[tuple[str, bytes]] = []
    batch_feedback: list[tuple[str, bytes]] = []
    candidates = [  # the same candidates every time: built once (10,000,000 decisions take a while)
        LoggedCandidate(
            id=f"item{k}",
            features={"price": float(10 + k), "quality": float(k) / CANDIDATES},
            predictions={},
            value=1.0 - k / CANDIDATES,
        )
        for k in range(CANDIDATES)
    ]
    for i in track(range(first, first + decisions), description="writing 1 event per decision"):
        unit = int(rng.integers(units))
        arm = "holdout" if unit % 20 == 0 else arms[(unit // 20) % 2]  # 5% / 47.5% / 47.5%
        decision_id = uuid.UUID(int=int(rng.integers(2**63)) << 64 | i).hex
        at = T0 + timedelta(seconds=i * 0.5)
        chosen = int(rng.integers(CANDIDATES))
        event = DecisionEvent(
            event_id=decision_id,
            use_case="shop",
            unit_id=f"user-{unit}",
            timestamp=at,
            decision_type="choose",
            context={
                "country": ["us", "de", "fr", "uk"][unit_country[unit]],
                "device": ["ios", "android", "web"][unit_device[unit]],
                "tenure": float(unit % 100),
            },
            candidates=candidates,
            choice=f"item{chosen}",
            ranking=None,
            propensity=0.84 if chosen == 0 else 0.04,
            exploration={"strategy": "epsilon_greedy", "epsilon": 0.2},
            model_versions={},
            policy="default" if arm != "model" else "model",
            experiment="big",
            arm=arm,
            experiment_phase=1,
        )
        batch_decisions.append((decision_id, encode_decision(event)))
        if rng.random() < 0.2 + 0.02 * chosen:
            feedback = FeedbackEvent(
                event_id=uuid.uuid4().hex,
                decision_id=decision_id,
                use_case="shop",
                outcomes={"buy": 1.0, "revenue": float(10 + chosen)},
                timestamp=at + timedelta(minutes=5),
                received_at=at + timedelta(minutes=5),
            )
            batch_feedback.append((decision_id, encode_feedback(feedback)))
        if len(batch_decisions) >= 10_000:
            log.append("closedloop.decisions", batch_decisions)
            log.append("closedloop.feedback", batch_feedback)
            batch_decisions, batch_feedback = [], []
    log.append("closedloop.decisions", batch_decisions)
    log.append("closedloop.feedback", batch_feedback)
    log.close()


def closing_time(decisions: int) -> float:
    """When every window of ``decisions`` logged half a second apart has closed (an hour each)."""
    return (T0 + timedelta(seconds=decisions * 0.5, hours=2)).timestamp()


def _pss(pid: int) -> int:
    """The process's proportional set size: its own pages, plus each page it shares with N
    processes counted 1/N (what summing processes' memory should count: RSS counts a page the
    decoding workers share with their fork server once in each)."""
    with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
        for line in rollup:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """The largest memory of this process and its children together, sampled: proportional set
    sizes summed (``peak``), and resident set sizes summed (``peak_rss``, shared pages counted in
    every process that maps them).

    A sample reads each process's ``smaps_rollup``, for which the kernel walks every page of it:
    ~25 ms of CPU for a 2 GB analysis and its workers. Taken every 0.1 s, the samples kept their
    thread busy for 20 s of a 10,000,000-decision analysis (py-spy), CPU its two decoding workers
    did not get; so samples are spaced to use at most ``duty`` of one core (every 0.1 s while
    they are cheap, every ~0.5 s at 2 GB), and `samples` and `cpu_seconds` say what they took."""

    def __init__(self, interval: float = 0.1, duty: float = 0.05) -> None:
        self.peak = 0
        self.peak_rss = 0
        self.by_step: dict[str, int] = {}
        """Step (as `mark` named it) -> the largest memory (PSS) seen while it ran."""
        self.samples = 0
        self.cpu_seconds = 0.0
        self._step = "(start)"
        self._interval = interval
        self._duty = duty
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._done.is_set():
            began = time.thread_time()
            total, rss = _pss(me.pid), me.memory_info().rss
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                    rss += child.memory_info().rss
                    total += _pss(child.pid)
            self.peak = max(self.peak, total)
            self.peak_rss = max(self.peak_rss, rss)
            self.by_step[self._step] = max(self.by_step.get(self._step, 0), total)
            spent = time.thread_time() - began
            self.samples += 1
            self.cpu_seconds += spent
            self._done.wait(max(self._interval, spent / self._duty - spent))

    def mark(self, step: str) -> None:
        self._step = step

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()


def champion(registry: LocalModelRegistry) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((5000, 5))
    y = (rng.random(5000) < 0.1 + 0.3 * x[:, 4]).astype(float)
    names = ["country", "device", "tenure", "price", "quality"]
    booster = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(x, y, feature_name=names), 100)
    registry.publish("shop", "buy", booster.model_to_string(), {}, champion=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--units", type=int, default=200_000)
    parser.add_argument("--poll-decisions", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: per core)")
    parser.add_argument(
        "--events-dir",
        type=Path,
        default=None,
        help="keep the events here and analyse those already there (written once for A/B runs)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        directory = args.events_dir or Path(folder)
        config = parse_config(CONFIG, environ={})
        config = config.model_copy(
            update={"infrastructure": config.infrastructure.model_copy(update={"data_dir": str(directory)})}
        )
        registry = LocalModelRegistry(directory / "registry")
        if (directory / "events").exists():
            print(
                f"analysing the events already in {directory} (written with --decisions {args.decisions:,})"
            )
        else:
            champion(registry)
            start_experiment(
                registry, "shop", "big", config.use_cases["shop"].experiments["big"], now=T0.timestamp()
            )
            started = time.perf_counter()
            # In a process of its own, so that this one's memory is the analysis's alone.
            writer = multiprocessing.get_context("spawn").Process(
                target=write_events, args=(directory, args.decisions, args.units)
            )
            writer.start()
            writer.join()
            print(f"wrote {args.decisions:,} decisions in {time.perf_counter() - started:.1f} s")
        freeze_startup_objects()  # as `closedloop console` and `closedloop report` do
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        marks: list[tuple[str, float]] = []  # (step, when it began)
        started = time.perf_counter()
        with PeakMemory() as peak:
            report = analyze_experiment(
                config,
                "big",
                as_of=closing_time(args.decisions),
                progress=lambda step: (marks.append((step, time.perf_counter())), peak.mark(step)),
                workers=args.workers,
            )
        analysis = time.perf_counter() - started
        marks.append(("(end)", time.perf_counter()))
        started = time.perf_counter()
        write_report_files(report, directory / "report")
        rendering = time.perf_counter() - started
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        for (name, began), (_, ended) in itertools.pairwise(marks):
            print(f"  {name:<24} {ended - began:7.2f} s   peak {peak.by_step.get(name, 0) / 2**20:6,.0f} MiB")
        print(
            f"analysis of {sum(a.decisions for a in report.arms):,} decisions: {analysis:.1f} s "
            f"({sum(a.decisions for a in report.arms) / analysis:,.0f} decisions/s); report files {rendering:.1f} s"
        )
        print(f"this process's peak RSS: {rss_before:.0f} MiB before the analysis, {rss_after:.0f} MiB after")
        print(
            f"peak memory of the analysis with its worker processes ({peak.samples} samples, one every "
            f"{analysis / max(peak.samples, 1):.2f} s, {peak.cpu_seconds:.1f} s of CPU): "
            f"{peak.peak / 2**20:,.0f} MiB proportional (shared pages once), "
            f"{peak.peak_rss / 2**20:,.0f} MiB resident summed (shared pages in each process)"
        )
        print(f"OPE sample: {report.ope.sample if report.ope else 0}; notes: {report.notes}")
        if args.poll_decisions:
            poll(config, directory, args.decisions, args.poll_decisions, args.units)


def poll(config: ClosedLoopConfig, directory: Path, logged: int, new: int, units: int) -> None:
    """A watch's poll after ``new`` more decisions, against a fresh analysis of the whole log."""
    as_of = closing_time(logged + new)
    with ExperimentWatch(config, "big", detail=False) as watch:
        watch.report(as_of=as_of)
        write_events(directory, new, units, seed=1, first=logged)
        read_before = watch.records_read
        started = time.perf_counter()
        polled = watch.report(as_of=as_of)
        polling = time.perf_counter() - started
        read = watch.records_read - read_before
    started = time.perf_counter()
    fresh = analyze_experiment(config, "big", as_of=as_of, detail=False)
    full = time.perf_counter() - started
    assert polled.model_dump() == fresh.model_dump(), "the poll and the fresh analysis disagree"
    print(
        f"after {new:,} more decisions: watch poll {polling:.2f} s ({read:,} records read), "
        f"fresh analysis {full:.2f} s; the poll takes {polling / full:.3f} of the fresh analysis"
    )


if __name__ == "__main__":
    main()
