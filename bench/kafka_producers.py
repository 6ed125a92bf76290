"""Producer cost per record: kafka-python against librdkafka (confluent-kafka), on the Tansu broker.

Why the outbox shipper produces with librdkafka: it runs in the service's process, so every
microsecond of Python it spends per record is taken from decisions under the GIL. Both clients send
the same keyed records with acks=all and wait for every acknowledgement; CPU is this process's
(all threads), divided by the records.

    cd bench && ../.venv/bin/python kafka_producers.py [--records 50000] [--sizes 250 15000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Broker

from closedloop.eventlog import ensure_topics


def kafka_python(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2, batch_size=1024 * 1024)
    futures = [producer.send(topic, key=key, value=value) for key, value in records]
    for future in futures:
        future.get(timeout=60)
    producer.close()


def librdkafka(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "batch.size": 1024 * 1024}
    )
    failed: list[object] = []

    def report(error: object, _message: object) -> None:
        if error is not None:
            failed.append(error)

    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(60) or failed:
        raise RuntimeError(f"{len(failed)} records failed")


def measure(
    run: Callable[[str, str, list[tuple[bytes, bytes]]], None], bootstrap: str, count: int, size: int
) -> tuple[float, float]:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], partitions=3)
    value = os.urandom(size // 2).hex().encode()
    records = [(uuid.uuid4().hex.encode(), value) for _ in range(count)]
    cpu, wall = time.process_time(), time.perf_counter()
    run(bootstrap, topic, records)
    return (time.process_time() - cpu) / count * 1e6, count / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 15_000])
    args = parser.parse_args()
    broker = Broker()
    broker.start()
    try:
        for size in args.sizes:
            count = args.records if size < 5000 else args.records // 10
            python_cpu, python_rate = measure(kafka_python, broker.bootstrap, count, size)
            rd_cpu, rd_rate = measure(librdkafka, broker.bootstrap, count, size)
            print(
                f"{count} records of {size} B: kafka-python {python_cpu:.1f} us CPU/record, {python_rate:.0f}/s; "
                f"librdkafka {rd_cpu:.1f} us CPU/record, {rd_rate:.0f}/s; CPU ratio {python_cpu / rd_cpu:.1f}x"
            )
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
