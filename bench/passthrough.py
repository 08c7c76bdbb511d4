"""The raw Kafka floor: the same Avro bytes produced, relayed once by a consumer→producer
process, and counted by a reader process. No decoding, no transactions, no processing.

`python -m bench.passthrough relay|count ...` are the two worker processes; `run_passthrough`
drives them from the bench.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench import measure
from shared.config import KafkaSettings
from shared.kafka import clients

# The same client settings the services use, minus transactions and read_committed.
PRODUCER_CONF = {"linger.ms": 5, "compression.type": "lz4"}
CONSUMER_CONF = {"enable.auto.commit": False, "queued.max.messages.kbytes": 8192}


def _consumer(bootstrap: str, topic: str, partitions: int) -> Consumer:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-pt-{uuid.uuid4().hex[:6]}", **CONSUMER_CONF}
    )
    # assign, not subscribe: no group join to wait for.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    consumer.consume(num_messages=1, timeout=0.5)
    return consumer


def relay(bootstrap: str, src: str, dst: str, partitions: int, messages: int) -> None:
    consumer = _consumer(bootstrap, src, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF})
    print("ready", flush=True)
    seen = 0
    while seen < messages:
        for msg in consumer.consume(num_messages=500, timeout=0.1):
            if msg.error() is not None:
                continue
            clients.produce(producer, dst, msg.value(), None, msg.partition())
            seen += 1
        producer.poll(0)
    producer.flush(30)
    consumer.close()


def count(bootstrap: str, topic: str, partitions: int, messages: int) -> None:
    consumer = _consumer(bootstrap, topic, partitions)
    print("ready", flush=True)
    seen = 0
    while seen < messages:
        seen += sum(1 for m in consumer.consume(num_messages=500, timeout=0.1) if m.error() is None)
    print(json.dumps({"finished": time.time(), "messages": seen}), flush=True)
    consumer.close()


def run_passthrough(bootstrap: str, payloads: list[bytes], rows: int, partitions: int = 4) -> dict[str, Any]:
    """`payloads` are the encoded batch messages holding `rows` rows in all."""
    kafka_admin = clients.admin(KafkaSettings(bootstrap_servers=bootstrap))
    prefix = f"bench-pt-{uuid.uuid4().hex[:6]}"
    src, dst = f"{prefix}.in", f"{prefix}.out"
    clients.ensure_topics(
        kafka_admin, [clients.TopicSpec(src, partitions), clients.TopicSpec(dst, partitions)]
    )
    n = str(len(payloads))
    common = ["--bootstrap", bootstrap, "--partitions", str(partitions), "--messages", n]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.passthrough", "relay", "--src", src, "--dst", dst, *common],
            stdout=subprocess.PIPE,
            text=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "bench.passthrough", "count", "--src", dst, *common],
            stdout=subprocess.PIPE,
            text=True,
        ),
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("passthrough worker did not start")
        sampler = measure.ProcessSampler({"relay": workers[0].pid, "count": workers[1].pid}).start()
        producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_CONF})
        started = time.time()
        for i, payload in enumerate(payloads):
            clients.produce(producer, src, payload, None, i % partitions)
            producer.poll(0)
        producer.flush(60)
        produced = time.time()
        out, _ = workers[1].communicate(timeout=300)
        procs = sampler.stop()
        finished = json.loads(out.strip().splitlines()[-1])["finished"]
        workers[0].wait(60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        measure.delete_topics(kafka_admin, prefix)
    seconds = finished - started
    return {
        "rows": rows,
        "messages": len(payloads),
        "bytes": sum(len(p) for p in payloads),
        "seconds": round(seconds, 3),
        "produce_seconds": round(produced - started, 3),
        "rows_per_s": round(rows / seconds, 1),
        "services": {
            n: {"rss_hwm_mb": round(s.rss_hwm_mb, 1), "cpu_s": round(s.cpu_s, 2)} for n, s in procs.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough")
    parser.add_argument("role", choices=["relay", "count"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--messages", type=int, required=True)
    args = parser.parse_args()
    if args.role == "relay":
        relay(args.bootstrap, args.src, args.dst, args.partitions, args.messages)
    else:
        count(args.bootstrap, args.src, args.partitions, args.messages)


if __name__ == "__main__":
    main()
