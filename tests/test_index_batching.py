"""Group commit of the decision index's writes (`IndexBatcher`): concurrent decisions sent to a
real `closedloop serve` on real Redis share script calls, and every one of them is in the index
before it is answered: feedback sent the moment its answer arrives is accepted, never an orphan,
and a retried request id gets the first answer back."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
from conftest import config_file, serve_in_subprocess

CONCURRENT = 64


def _counter(metrics: str, name: str) -> float:
    match = re.search(rf"^{name}_total (\S+)$", metrics, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


async def _decide_then_report(client: httpx.AsyncClient, i: int) -> tuple[int, int, str]:
    body = {
        "use_case": "pick",
        "unit_id": f"u{i}",
        "request_id": f"r{i}",
        "candidates": [{"id": "a", "features": {"price": 1.0}}, {"id": "b", "features": {"price": 2.0}}],
    }
    decided = await client.post("/v1/decide", json=body)
    decision = decided.json()
    reported = await client.post(
        "/v1/feedback", json={"decision_id": decision["decision_id"], "outcomes": {"click": 1}}
    )
    return decided.status_code, reported.status_code, decision["decision_id"]


async def _burst(url: str) -> list[tuple[int, int, str]]:
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        return await asyncio.gather(*(_decide_then_report(client, i) for i in range(CONCURRENT)))


def test_concurrent_decisions_share_index_calls_and_each_is_indexed_before_its_answer(
    tmp_path: Path, redis_prefix: str
) -> None:
    _, path = config_file(tmp_path, redis_prefix)
    with serve_in_subprocess(path) as (url, _):
        first, *again = [asyncio.run(_burst(url)) for _ in range(3)]
        metrics = httpx.get(url + "/metrics").text
        retried = httpx.post(
            url + "/v1/decide",
            json={
                "use_case": "pick",
                "unit_id": "u7",
                "request_id": "r7",
                "candidates": [
                    {"id": "a", "features": {"price": 1.0}},
                    {"id": "b", "features": {"price": 2.0}},
                ],
            },
        ).json()
    # every first report accepted: its decision was in the index when the answer left
    assert [(decided, reported) for decided, reported, _ in first] == [(200, 202)] * CONCURRENT
    # the same request ids again: the same decisions, answered from the index; their reports repeat
    for burst in again:
        assert [(decided, reported) for decided, reported, _ in burst] == [(200, 409)] * CONCURRENT
        assert [decision for _, _, decision in burst] == [decision for _, _, decision in first]
    assert retried["decision_id"] == first[7][2]
    writes, batches = (
        _counter(metrics, "closedloop_index_writes"),
        _counter(metrics, "closedloop_index_batches"),
    )
    assert writes == CONCURRENT  # retries were answered from the index, without a write
    assert batches < writes  # concurrent decisions shared calls
