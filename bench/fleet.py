"""Benchmark: events per second through `spotwatch fleet watch` against moto's server.

Measured side by side in one run, each on a fresh queue that a feeder thread
keeps about DEPTH messages deep until N EventBridge-shaped messages went in (a
fleet's queue is usually near-empty; and moto's ReceiveMessage slows down with
queue depth, so a preloaded queue of N would measure moto, not the consumers):

- baseline: a plain boto3 loop (receive 10, delete_message_batch), in its own
  process, one and two of them on the queue;
- spotwatch fleet watch, hook-less, one and two watchers;
- spotwatch fleet watch with a trivial hook (``exit 0``), one and two watchers.

Rates are N / (last stop - first start), where start and stop are taken inside
each consumer (the watchers' own ``fleet.started`` and ``fleet.stopped`` log
timestamps), so interpreter start-up is not counted for either side. moto's
server runs in its own process on 127.0.0.1.

    .venv/bin/python bench/fleet.py [--events 1000] [--depth 30]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("moto server did not start") from None
            time.sleep(0.1)


def envelope(n: int) -> str:
    return json.dumps({
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-26T03:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/i-{n:017x}"],
        "detail": {"instance-id": f"i-{n:017x}", "instance-action": "terminate"},
    })


def fresh_queue() -> str:
    from spotwatch.fleet_setup import setup_fleet

    return setup_fleet(f"bench-{uuid.uuid4().hex[:8]}").queue_url


class Feeder(threading.Thread):
    """Sends ``count`` messages, keeping the queue about ``depth`` messages deep."""

    def __init__(self, queue_url: str, count: int, depth: int) -> None:
        super().__init__(daemon=True)
        import boto3

        self.sqs = boto3.client("sqs")
        self.queue_url, self.count, self.depth = queue_url, count, depth
        self.sent = 0
        self.error: BaseException | None = None

    def send(self, up_to: int) -> None:
        while self.sent < min(self.count, up_to):
            size = min(10, self.count - self.sent)
            entries = [{"Id": str(i), "MessageBody": envelope(self.sent + i)} for i in range(size)]
            self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            self.sent += size

    def run(self) -> None:
        try:
            while self.sent < self.count:
                attrs = self.sqs.get_queue_attributes(
                    QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
                )["Attributes"]
                visible = int(attrs["ApproximateNumberOfMessages"])
                if visible < self.depth:
                    self.send(self.sent + self.depth - visible)
                else:
                    time.sleep(0.005)
        except BaseException as exc:
            self.error = exc


def baseline_worker(queue_url: str, count: int) -> None:
    """The plain loop: receive up to 10, delete them in one batch; print start and stop."""
    import boto3

    sqs = boto3.client("sqs")
    done = 0
    started = time.time()
    while done < count:
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=min(10, count - done), WaitTimeSeconds=1
        ).get("Messages", [])
        if not messages:
            continue
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ])
        done += len(messages)
    print(json.dumps({"started": started, "stopped": time.time()}))


def run_baseline(count: int, workers: int, depth: int) -> float:
    queue_url = fresh_queue()
    feeder = Feeder(queue_url, count, depth)
    feeder.send(depth)
    feeder.start()
    procs = [
        subprocess.Popen([sys.executable, str(HERE), "--baseline-worker", queue_url,
                          str(count // workers)], stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    spans = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    feeder.join()
    return count / (max(s["stopped"] for s in spans) - min(s["started"] for s in spans))


def run_watchers(count: int, workers: int, depth: int, hooks_dir: Path | None,
                 scratch: Path) -> float:
    queue_url = fresh_queue()
    feeder = Feeder(queue_url, count, depth)
    feeder.send(depth)
    feeder.start()
    procs = []
    for k in range(workers):
        log = scratch / f"watch-{uuid.uuid4().hex[:6]}-{k}.log"
        args = [sys.executable, "-m", "spotwatch", "fleet", "watch", "--queue-url", queue_url,
                "--max-messages", str(count // workers), "--wait-seconds", "1",
                "--log-format", "json"]
        if hooks_dir is not None:
            args += ["--hooks-dir", str(hooks_dir)]
        with open(log, "wb") as err:
            procs.append((subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err), log))
    starts, stops = [], []
    for proc, log in procs:
        if proc.wait(timeout=900) != 0:
            raise SystemExit(f"fleet watch failed: {log.read_text()[-2000:]}")
        for line in log.read_text().splitlines():
            record = json.loads(line)
            when = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()
            if record["event"] == "fleet.started":
                starts.append(when)
            elif record["event"] == "fleet.stopped":
                stops.append(when)
                handled = sum(record[k] for k in ("done", "failed", "duplicate", "bad", "ignored"))
                if record["failed"] or record["bad"]:
                    raise SystemExit(f"unexpected failures in {log}")
                assert handled == count // workers
    feeder.join()
    return count / (max(stops) - min(starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=30, help="queue depth kept by the feeder")
    parser.add_argument("--baseline-worker", nargs=2, metavar=("QUEUE_URL", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker(args.baseline_worker[0], int(args.baseline_worker[1]))
        return

    moto, url = start_moto()
    os.environ.update({
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    from spotwatch import logs

    logs.configure("json", "warning")
    try:
        import boto3

        boto3.client("ec2").describe_instances()  # moto loads its EC2 backend once, slowly
        n = args.events - args.events % 2
        with tempfile.TemporaryDirectory(prefix="spotwatch-bench-") as tmp:
            scratch = Path(tmp)
            hooks = scratch / "hooks"
            hooks.mkdir(mode=0o755)
            hook = hooks / "10-true"
            hook.write_text("#!/bin/sh\nexit 0\n")
            hook.chmod(0o755)
            rows = []
            for workers in (1, 2):
                rows.append((f"boto3 receive+delete loop, {workers} consumer(s)",
                             run_baseline(n, workers, args.depth)))
                rows.append((f"fleet watch, no hooks, {workers} watcher(s)",
                             run_watchers(n, workers, args.depth, None, scratch)))
                rows.append((f"fleet watch, trivial hook, {workers} watcher(s)",
                             run_watchers(n, workers, args.depth, hooks, scratch)))
        print(f"{n} events per run, queue kept ~{args.depth} deep, moto server on 127.0.0.1, "
              f"{os.cpu_count()} CPUs")
        width = max(len(name) for name, _ in rows)
        for name, rate in rows:
            print(f"  {name:<{width}}  {rate:8.1f} events/s")
    finally:
        moto.terminate()
        moto.wait(timeout=10)


if __name__ == "__main__":
    main()
