"""Benchmark: events per second through `spotwatch fleet watch` against moto's server.

Measured side by side in one run, each on a fresh queue that a feeder thread
keeps about DEPTH messages deep until N EventBridge-shaped messages went in (a
fleet's queue is usually near-empty; and moto's ReceiveMessage slows down with
queue depth, so a preloaded queue of N would measure moto, not the consumers):

- baseline: a plain boto3 loop (receive 10, delete_message_batch), in its own
  process, one and two of them on the queue;
- spotwatch fleet watch, hook-less, one and two watchers: with the default tag
  reads (the events name instances made in moto with a Name and a team tag, as a
  real fleet's are), with ``--no-tags``, and for instances EC2 does not know
  (every batch then costs a DescribeInstances, the one call the loop does not
  make); the EC2 calls the watchers made for tags are printed beside;
- spotwatch fleet watch with a trivial hook (``exit 0``), one and two watchers;
- spotwatch fleet watch, hook-less, writing ``--metrics-file``;
- ``--workers`` 1, 8, 32, 64, 128 with hooks that sleep 1 s (4 x N events,
  at least 16, queued before the watcher starts) and with the trivial hook;
- the wave: 10,000 interruption warnings for 10,000 instances already queued,
  hooks that sleep 1 s, one watcher, side by side at each ``--wave-workers``
  (64, the setting that met the 2,000 wave, is the baseline): when each hook
  started after the watcher was launched (the goal: all within 120 s), the
  watcher's peak RSS, and where the CPU went (the watcher, its hooks, moto).

Rates are N / (last stop - first start), where start and stop are taken inside
each consumer (the watchers' own ``fleet.started`` and ``fleet.stopped`` log
timestamps), so interpreter start-up is not counted for either side. moto's
server runs in its own process on 127.0.0.1.

    .venv/bin/python bench/fleet.py [--events 1000] [--depth 30] [--wave 10000]
                                    [--wave-workers 64,256] [--wave-goal 120]
                                    [--only rates,workers,wave]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
from typing import Any

HERE = Path(__file__).resolve()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--moto-server", str(port)],
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


def serve_moto(port: str) -> None:
    """moto's server, with two quadratic steps made linear.

    moto checks each message it hands out against the queue's retention period
    by computing every queue attribute, and so counting the whole queue, once
    per message: a receive of 10 from a queue 2,000 deep took about 1.4 s, and
    a plain receive+delete loop drained such a queue at 17 messages/s. SQS does
    not slow down with depth. Here the check reads the retention period alone;
    both sides of every comparison run against this same server.

    moto finds an instance by id by walking every instance, and RunInstances
    does that for each instance it makes (to attach its volume): 10,000
    instances took many minutes to make. Here the walk starts at the newest
    reservation, which is where RunInstances looks; and an instance's own tags
    (in every RunInstances answer) are read from the tag table by its id, not
    by filtering every tag in the region.

    moto also computes every queue attribute, counting the queue three times,
    for each message sent (to read ContentBasedDeduplication): filling a queue
    with 10,000 took many minutes. Here the counts are made only when asked for.
    And a receive lists every visible message, reading the clock twice for
    each, to hand out the first ten: from a queue 10,000 deep one watcher got
    8 messages/s. Here the receive walks the queue only as far as it needs.
    Its receives are made one at a time (not their long-poll waits): two at
    once could hand out the same message, which SQS does not.
    """
    from moto.core.utils import unix_time, unix_time_millis
    from moto.ec2.exceptions import InvalidInstanceIdError
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix
    from moto.server import main as moto_main
    from moto.sqs.models import Queue, SQSBackend

    def get_instance(self: InstanceBackend, instance_id: str) -> Instance:
        for reservation in reversed(list(self.reservations.values())):
            for instance in reservation.instances:
                if instance.id == instance_id:
                    return instance
        raise InvalidInstanceIdError(instance_id)

    InstanceBackend.get_instance = get_instance  # type: ignore[method-assign]

    def get_tags(self: TaggedEC2Resource) -> list[dict[str, str]]:
        resource = getattr(self, "id", None)
        if not resource:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource), "")
        return [{"resource_id": resource, "key": k, "value": v, "resource_type": kind}
                for k, v in self.ec2_backend.tags.get(resource, {}).items()]  # type: ignore[attr-defined]

    TaggedEC2Resource.get_tags = get_tags  # type: ignore[method-assign]

    counts = {
        "ApproximateNumberOfMessages": lambda q: len(q.messages),
        "ApproximateNumberOfMessagesDelayed": lambda q: q.approximate_number_of_messages_delayed,
        "ApproximateNumberOfMessagesNotVisible":
            lambda q: q.approximate_number_of_messages_not_visible,
    }

    class LazyCounts(dict):  # type: ignore[type-arg]
        def __init__(self, queue: Queue, base: dict[str, Any]) -> None:
            super().__init__(base, **{k: None for k in counts})
            self.queue = queue

        def __getitem__(self, key: str) -> Any:
            return counts[key](self.queue) if key in counts else super().__getitem__(key)

        def get(self, key: str, default: Any = None) -> Any:
            if key not in self:
                return default
            return self[key]

        def items(self) -> Any:
            return [(k, self[k]) for k in self]

        def values(self) -> Any:
            return [self[k] for k in self]

    plain_attributes = Queue.attributes.fget
    base_names = [n for n in Queue.BASE_ATTRIBUTES if n not in counts]

    def attributes(self: Queue) -> dict[str, Any]:
        self.BASE_ATTRIBUTES = base_names
        return LazyCounts(self, plain_attributes(self))  # type: ignore[misc]

    Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]

    class Visible:
        """The queue's visible messages, found as they are asked for."""

        def __init__(self, queue: Queue) -> None:
            self.queue = queue

        def __iter__(self) -> Any:
            now = unix_time_millis()
            return (m for m in list(self.queue._messages)
                    if now > m.visible_at and not now < m.delayed_until)

        def __len__(self) -> int:
            return sum(1 for _ in self)

        def __bool__(self) -> bool:
            return any(True for _ in self)

    Queue.messages = property(Visible)  # type: ignore[assignment,method-assign]

    receiving = threading.Lock()
    plain_receive = SQSBackend.receive_message
    plain_wait = Queue.wait_for_messages

    def receive_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        with receiving:
            return plain_receive(self, *args, **kwargs)

    def wait_for_messages(self: Queue, timeout: float) -> None:
        receiving.release()
        try:
            plain_wait(self, timeout)
        finally:
            receiving.acquire()

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]

    # moto deletes a batch one receipt at a time, each a scan of every message in
    # the queue: O(batch x depth), 10 x 10,000 per call in the wave, where SQS takes
    # constant time. One scan per batch keeps moto's cost out of the watcher's figures.
    # Under the receive lock: moto rebuilds the message list, so two deletes at once
    # (a watcher's deleters run side by side) would lose one, and its message come back.
    # Every delete here is a batch (the watcher's and the plain loop's).
    def delete_message_batch(self: SQSBackend, queue_name: str,
                             receipts: list[dict[str, Any]]) -> tuple[list[str], list[Any]]:
        queue = self.get_queue(queue_name)
        wanted = {r["ReceiptHandle"] for r in receipts}
        with receiving:
            done = {h for h in wanted if h in queue.deleted_messages}
            kept = []
            for message in queue._messages:
                handles = message.all_receipt_handles
                hit = wanted.intersection(handles)
                if not hit:
                    kept.append(message)
                    continue
                done |= hit
                queue.pending_messages.discard(message)
                queue.deleted_messages.update(handles)
            queue._messages = kept
        errors = [{"Id": r["Id"], "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                   "Message": f'The input receipt handle "{r["ReceiptHandle"]}" is not a valid '
                   "receipt handle."} for r in receipts if r["ReceiptHandle"] not in done]
        return [r["Id"] for r in receipts if r["ReceiptHandle"] in done], errors

    SQSBackend.delete_message_batch = delete_message_batch  # type: ignore[method-assign]

    def retained(self: SQSBackend, queue_name: str, message: object) -> bool:
        period = float(self.get_queue(queue_name).message_retention_period)
        sent = getattr(message, "sent_timestamp", None) or 0
        return bool(period + sent / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = retained  # type: ignore[method-assign]
    moto_main(["-H", "127.0.0.1", "-p", port])


# The fleet's instances, made in moto by make_fleet(): the events name them, so
# the watchers' tag lookups find a Name and a team tag, as they would in a real
# fleet. Events numbered past the fleet, or with known=False, name instances
# EC2 does not know.
FLEET: list[str] = []


def make_fleet(count: int) -> None:
    import boto3

    ec2 = boto3.client("ec2")
    while len(FLEET) < count:
        made = ec2.run_instances(
            ImageId="ami-12c6146b", InstanceType="t3.micro",
            MinCount=min(500, count - len(FLEET)), MaxCount=min(500, count - len(FLEET)),
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": "bench-worker"}, {"Key": "team", "Value": "bench"}]}],
        )["Instances"]
        FLEET.extend(i["InstanceId"] for i in made)


def instance_id(n: int, known: bool = True) -> str:
    return FLEET[n] if known and n < len(FLEET) else f"i-{n:017x}"


def envelope(n: int, known: bool = True) -> str:
    iid = instance_id(n, known)
    return json.dumps({
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2026-11-26T03:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{iid}"],
        "detail": {"instance-id": iid, "instance-action": "terminate"},
    })


def fresh_queue() -> str:
    from spotwatch.fleet_setup import setup_fleet

    return setup_fleet(f"bench-{uuid.uuid4().hex[:8]}").queue_url


class Feeder(threading.Thread):
    """Sends ``count`` messages, keeping the queue about ``depth`` messages deep."""

    def __init__(self, queue_url: str, count: int, depth: int, known: bool = True) -> None:
        super().__init__(daemon=True)
        self.known = known
        import boto3

        self.sqs = boto3.client("sqs")
        self.queue_url, self.count, self.depth = queue_url, count, depth
        self.sent = 0
        self.error: BaseException | None = None

    def send(self, up_to: int) -> None:
        while self.sent < min(self.count, up_to):
            size = min(10, self.count - self.sent)
            entries = [{"Id": str(i), "MessageBody": envelope(self.sent + i, self.known)}
                       for i in range(size)]
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
                 scratch: Path, pool: int = 16, extra: tuple[str, ...] = (),
                 known: bool = True) -> tuple[float, int]:
    """Events/s, and the EC2 calls all the watchers made for tags."""
    queue_url = fresh_queue()
    feeder = Feeder(queue_url, count, depth, known)
    feeder.send(depth)
    feeder.start()
    procs = []
    for k in range(workers):
        log = scratch / f"watch-{uuid.uuid4().hex[:6]}-{k}.log"
        args = [sys.executable, "-m", "spotwatch", "fleet", "watch", "--queue-url", queue_url,
                "--max-messages", str(count // workers), "--wait-seconds", "1",
                "--log-format", "json", "--workers", str(pool)]
        if hooks_dir is not None:
            args += ["--hooks-dir", str(hooks_dir)]
        args += extra
        with open(log, "wb") as err:
            procs.append((subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err), log))
    starts, stops = [], []
    ec2_calls = 0
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
                ec2_calls += record.get("tags_calls") or 0
                handled = sum(record[k] for k in ("done", "failed", "duplicate", "bad", "ignored"))
                if record["failed"] or record["bad"]:
                    raise SystemExit(f"unexpected failures in {log}")
                assert handled == count // workers
    feeder.join()
    return count / (max(stops) - min(starts)), ec2_calls


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def fill_queue(queue_url: str, count: int) -> None:
    """``count`` warnings for ``count`` instances, sent straight to the queue, 10 a call,
    from 8 threads (EventBridge would take longer to put them there, to no purpose)."""
    import boto3

    sqs = boto3.client("sqs")
    lock = threading.Lock()
    todo = list(range(0, count, 10))

    def send() -> None:
        while True:
            with lock:
                if not todo:
                    return
                start = todo.pop()
            entries = [{"Id": str(i), "MessageBody": envelope(start + i)}
                       for i in range(min(10, count - start))]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(the process's own CPU seconds, its reaped children's), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the ")": state is field 3, so utime (14) .. cstime (17) are [11:15].
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICKS, (cutime + cstime) / TICKS


class Sampler(threading.Thread):
    """Reads a process's peak RSS (VmHWM) and CPU until it exits; the last reading is
    its peak, and its CPU (the watcher's own; its hooks', the reaped children's) to
    within the last 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.cpu = (0.0, 0.0)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
                self.cpu = cpu_seconds(self.pid)
            except (OSError, ValueError, IndexError):
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            self.done.wait(0.2)


def run_preloaded(count: int, pool: int, hooks_dir: Path, scratch: Path,
                  moto_pid: int | None = None) -> dict[str, float]:
    """One watcher on a queue already holding ``count`` warnings: when it was launched,
    when it said it started, each hook's start (its own log), when it stopped, peak
    RSS, and the CPU seconds of the watcher, its hooks and (given its pid) moto."""
    queue_url = fresh_queue()
    fill_queue(queue_url, count)
    moto_before = cpu_seconds(moto_pid)[0] if moto_pid else 0.0
    log = scratch / f"preloaded-{uuid.uuid4().hex[:6]}.log"
    args = [sys.executable, "-m", "spotwatch", "fleet", "watch", "--queue-url", queue_url,
            "--max-messages", str(count), "--wait-seconds", "1", "--log-format", "json",
            "--workers", str(pool), "--hooks-dir", str(hooks_dir)]
    with open(log, "wb") as err:
        launched = time.time()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
    sampler = Sampler(proc.pid)
    sampler.start()
    if proc.wait(timeout=3600) != 0:
        raise SystemExit(f"fleet watch failed: {log.read_text()[-2000:]}")
    sampler.done.set()
    sampler.join()
    moto_cpu = cpu_seconds(moto_pid)[0] - moto_before if moto_pid else 0.0
    started = stopped = 0.0
    hook_starts: list[float] = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "hook.started":
            hook_starts.append(stamp(record["timestamp"]))
        elif record["event"] == "fleet.started":
            started = stamp(record["timestamp"])
        elif record["event"] == "fleet.stopped":
            stopped = stamp(record["timestamp"])
            if record["done"] != count:
                raise SystemExit(f"only {record['done']} of {count} handled: {log}")
    if len(hook_starts) != count:
        raise SystemExit(f"{len(hook_starts)} hooks started for {count} events: {log}")
    import boto3

    every = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url,
                                                     AttributeNames=["All"])["Attributes"]
    counts = {k: v for k, v in every.items() if k.startswith("ApproximateNumberOfMessages")}
    # a message left (not deleted) would come back: a delete was lost
    if len(counts) != 3 or sum(int(n) for n in counts.values()):
        raise SystemExit(f"messages left in the queue after the wave ({counts}): {log}")
    hook_starts.sort()
    return {
        "launched": launched, "started": started, "stopped": stopped,
        "first": hook_starts[0] - launched,
        "median": hook_starts[len(hook_starts) // 2] - launched,
        "p95": hook_starts[int(len(hook_starts) * 0.95) - 1] - launched,
        "last": hook_starts[-1] - launched,
        "rate": count / (stopped - started),
        "rss_mib": sampler.peak_kib / 1024,
        "cpu_watcher": sampler.cpu[0], "cpu_hooks": sampler.cpu[1], "cpu_moto": moto_cpu,
    }


def drain_preloaded(count: int) -> float:
    """Seconds the plain receive+delete loop takes to empty a queue holding ``count``."""
    queue_url = fresh_queue()
    fill_queue(queue_url, count)
    proc = subprocess.Popen([sys.executable, str(HERE), "--baseline-worker", queue_url,
                             str(count)], stdout=subprocess.PIPE, text=True)
    span = json.loads(proc.communicate(timeout=3600)[0])
    return float(span["stopped"] - span["started"])


def make_hooks(scratch: Path, name: str, body: str) -> Path:
    hooks = scratch / name
    hooks.mkdir(mode=0o755)
    hook = hooks / "10-hook"
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)
    return hooks


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def print_wave(count: int, pools: list[int], goal: float, hooks_dir: Path, scratch: Path,
               moto_pid: int) -> None:
    """The wave at each ``--workers`` in ``pools``, side by side, and the plain loop's drain."""
    drained = drain_preloaded(count)
    runs = []
    for pool in pools:
        runs.append(run_preloaded(count, pool, hooks_dir, scratch, moto_pid))
        print(f"  (wave at --workers {pool} done; {load_note()})", flush=True)
    print(f"\nwave: {count} warnings queued, hooks sleep 1 s, one watcher; "
          "seconds after the watcher was launched")
    head = "".join(f"  {'--workers ' + str(p):>13}" for p in pools)
    print(f"  {'':<34}{head}")

    def row(label: str, values: list[float]) -> None:
        print(f"  {label:<34}" + "".join(f"  {v:>13.1f}" for v in values))

    row("watcher started (fleet.started)", [w["started"] - w["launched"] for w in runs])
    for key in ("first", "median", "p95", "last"):
        row(f"hook started, {key}", [w[key] for w in runs])
    row("all handled", [w["stopped"] - w["launched"] for w in runs])
    row("events/s", [w["rate"] for w in runs])
    row("peak RSS, MiB", [w["rss_mib"] for w in runs])
    row("CPU s: watcher", [w["cpu_watcher"] for w in runs])
    row("CPU s: its hooks (sh + sleep)", [w["cpu_hooks"] for w in runs])
    row("CPU s: moto's server", [w["cpu_moto"] for w in runs])
    print("  " + f"{'every hook started within ' + format(goal, '.0f') + ' s':<34}" + "".join(
        f"  {'met' if w['last'] <= goal else 'NOT met':>13}" for w in runs))
    print(f"  (the boto3 receive+delete loop, no hooks, empties the same queue in "
          f"{drained:.1f} s: {count / drained:.0f} events/s; {load_note()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=30, help="queue depth kept by the feeder")
    parser.add_argument("--wave", type=int, default=10000, help="warnings queued for the wave")
    parser.add_argument("--wave-workers", default="64,256",
                        help="--workers settings the wave runs at, side by side (the first "
                        "is the baseline)")
    parser.add_argument("--wave-goal", type=float, default=120.0,
                        help="seconds after launch by which every hook should have started")
    parser.add_argument("--only", default="rates,workers,wave",
                        help="which parts to run (comma-separated: rates, workers, wave)")
    parser.add_argument("--baseline-worker", nargs=2, metavar=("QUEUE_URL", "COUNT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--moto-server", metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.moto_server:
        serve_moto(args.moto_server)
        return
    if args.baseline_worker:
        baseline_worker(args.baseline_worker[0], int(args.baseline_worker[1]))
        return
    parts = set(args.only.split(","))
    # A TERM (timeout, kill) still stops moto's server, in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    moto, url = start_moto()
    os.environ.update({
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    from spotwatch import logs

    logs.configure("json", "warning")
    print(f"moto server on 127.0.0.1, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
          f"at the start: {load_note()}")
    try:
        n = args.events - args.events % 2
        make_fleet(max(n if "rates" in parts else 0, args.wave if "wave" in parts else 0,
                       512 if "workers" in parts else 0))
        with tempfile.TemporaryDirectory(prefix="spotwatch-bench-") as tmp:
            scratch = Path(tmp)
            trivial = make_hooks(scratch, "trivial", "exit 0\n")
            sleepy = make_hooks(scratch, "sleep1", "sleep 1\n")
            if "rates" in parts:
                rows: list[tuple[str, float, float, str]] = []
                variants: list[tuple[str, Path | None, tuple[str, ...], bool]] = [
                    ("no hooks", None, (), True),
                    ("no hooks, instances EC2 does not know", None, (), False),
                    ("no hooks, --no-tags", None, ("--no-tags",), True),
                    ("trivial hook", trivial, (), True),
                    ("no hooks, --metrics-file", None,
                     ("--metrics-file", str(scratch / "fleet.prom")), True),
                ]
                for consumers in (1, 2):
                    base = run_baseline(n, consumers, args.depth)
                    rows.append((f"boto3 receive+delete loop, {consumers} consumer(s)", base, 1.0,
                                 "-"))
                    for label, hooks_dir, extra, known in variants:
                        rate, calls = run_watchers(n, consumers, args.depth, hooks_dir, scratch,
                                                   extra=extra, known=known)
                        rows.append((f"fleet watch, {label}, {consumers} watcher(s)", rate,
                                     rate / base, str(calls)))
                print(f"\n{n} events per run for {n} instances, queue kept ~{args.depth} deep, "
                      "--workers 16 (the default); x = over the loop with as many consumers; "
                      "EC2 calls = tag lookups, all watchers")
                width = max(len(name) for name, _, _, _ in rows)
                print(f"  {'':<{width}}  {'events/s':>8}  {'x':>5}  {'EC2 calls':>9}")
                for name, rate, ratio, calls in rows:
                    print(f"  {name:<{width}}  {rate:8.1f}  {ratio:5.2f}  {calls:>9}")
                print(f"  ({load_note()})")
            if "workers" in parts:
                print("\nevents/s by --workers, one watcher, events queued before it starts")
                print(f"  {'workers':>7}  {'hook: sleep 1 s':>22}  {'hook: exit 0':>18}")
                for pool in (1, 8, 32, 64, 128):
                    count = max(16, 4 * pool)
                    slow = run_preloaded(count, pool, sleepy, scratch)
                    quick = run_preloaded(400, pool, trivial, scratch)
                    print(f"  {pool:>7}  {slow['rate']:8.1f} ({count:>4} events)  "
                          f"{quick['rate']:8.1f} (400 events)", flush=True)
                print(f"  ({load_note()})")
            if "wave" in parts:
                print_wave(args.wave, [int(w) for w in args.wave_workers.split(",")],
                           args.wave_goal, sleepy, scratch, moto.pid)
    finally:
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
            moto.wait()


if __name__ == "__main__":
    main()
