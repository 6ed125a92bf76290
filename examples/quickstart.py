"""Five-minute quickstart: the decision path on embedded defaults (no servers).

A simulated news site asks closedloop to rank articles for each visitor, then reports clicks and
reading time. Everything is logged under .closedloop-quickstart/ as the trainer will read it.
Run with:  ./dev.sh demo   (or: python examples/quickstart.py)
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from closedloop.contracts import load_config
from closedloop.eventlog import FileEventLog, Position
from closedloop.sdk import EmbeddedClient

HERE = Path(__file__).parent
DATA = Path(".closedloop-quickstart")
TOPICS = ["sports", "tech", "politics", "culture"]


def main(visits: int = 2000) -> None:
    console = Console()
    shutil.rmtree(DATA, ignore_errors=True)
    config = load_config(HERE / "closedloop.yaml", environ={"CLOSEDLOOP_DATA_DIR": str(DATA)})
    rng = random.Random(7)
    clicks = 0
    shown_first: Counter[str] = Counter()
    with EmbeddedClient(config, seed=7) as client:
        for visit in track(range(visits), description="visitors", console=console):
            country = rng.choice(["us", "de", "fr"])
            articles = {
                f"article-{i}": {
                    "topic": rng.choice(TOPICS),
                    "age_hours": rng.uniform(0, 48),
                    "popularity": rng.uniform(0, 1),
                }
                for i in range(8)
            }
            decision = client.decide(
                "home_feed",
                f"user-{visit % 300}",
                context={"country": country, "hour": 20},
                candidates=articles,
            )
            top = (decision.ranking or [])[0]
            shown_first[str(articles[top]["topic"])] += 1
            # the hidden truth of this simulated site: tech is read in the evening, old news is not
            liking = 0.25 if articles[top]["topic"] == "tech" else 0.08
            clicked = rng.random() < liking * (1.0 - float(articles[top]["age_hours"]) / 96)
            if clicked:
                clicks += 1
                client.log_feedback(decision.decision_id, {"click": 1, "read_seconds": rng.uniform(10, 120)})
    log = FileEventLog(DATA / "events")
    decisions, _ = log.read("closedloop.decisions", Position(0, 0), max_records=10**6)
    feedback, _ = log.read("closedloop.feedback", Position(0, 0), max_records=10**6)
    log.close()

    table = Table(title="quickstart: the default policy (no model yet)")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("decisions made and logged", str(len(decisions)))
    table.add_row("feedback events logged", str(len(feedback)))
    table.add_row("click rate", f"{clicks / visits:.3f}")
    for topic in TOPICS:
        table.add_row(f"top slot: {topic}", str(shown_first[topic]))
    console.print(table)
    console.print(f"Decisions and outcomes are logged in {DATA / 'events'}, with the features as seen.")


if __name__ == "__main__":
    main()
