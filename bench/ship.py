"""Benchmark: `spotwatch ship` against `aws s3 cp --recursive`, same tree, same server, one run.

Generates a tree of log-like text files (sizes spread log-uniformly from 1 KiB
to 64 MiB), starts moto's server on 127.0.0.1 with a byte-counting TCP proxy in
front of it, and uploads the tree with both tools, each to its own bucket,
through the same proxy. Prints wall seconds, bytes on the wire (client to
server, HTTP headers included) and wire/source ratio for each, then the
spotwatch/aws-cli ratios.

    python bench/ship.py            # 100 files, ~128 MiB (quick)
    python bench/ship.py --full     # 200 files, ~512 MiB (the issue's figure)

Needs aws-cli in the same environment: pip install '.[bench]'.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
KiB = 1024
LEVELS = (b"INFO", b"INFO", b"INFO", b"INFO", b"DEBUG", b"WARN", b"ERROR")
ROUTES = (
    b"/api/v1/users",
    b"/api/v1/orders",
    b"/api/v1/orders/search",
    b"/healthz",
    b"/api/v2/items",
    b"/static/app.js",
    b"/api/v1/payments/authorize",
)


# ---------------------------------------------------------------- the tree


def log_pool(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of varied log lines to cut files from."""
    lines = []
    total = 0
    stamp = 1_795_000_000.0
    while total < size:
        stamp += rng.random() * 0.05
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)).encode()
        line = (
            b"%s.%03dZ %s [worker-%d] req=%016x method=%s path=%s status=%d ms=%.1f user=%d\n"
            % (
                seconds,
                int(stamp * 1000) % 1000,
                rng.choice(LEVELS),
                rng.randint(1, 32),
                rng.getrandbits(64),
                rng.choice((b"GET", b"GET", b"POST", b"PUT")),
                rng.choice(ROUTES),
                rng.choice((200, 200, 200, 201, 204, 304, 400, 404, 500)),
                rng.expovariate(1 / 40),
                rng.randint(1, 999_999),
            )
        )
        if rng.random() < 0.02:
            line += b'Traceback (most recent call last):\n  File "app.py", line %d, in handle\n' % (
                rng.randint(1, 900)
            ) + b"ValueError: bad input %x\n" % rng.getrandbits(32)
        lines.append(line)
        total += len(line)
    return b"".join(lines)


def file_sizes(rng: random.Random, count: int, total: int, low: int, high: int) -> list[int]:
    """``count`` sizes, log-uniform in [low, high], scaled to add up to about ``total``."""
    sizes = [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(count)]
    sizes[0], sizes[-1] = low, high  # the extremes are always there
    for _ in range(50):
        scale = total / sum(sizes)
        sizes = [min(max(s * scale, low), high) for s in sizes]
        if abs(sum(sizes) - total) < total * 0.01:
            break
    return [int(s) for s in sizes]


def make_tree(root: Path, count: int, total: int, seed: int = 7) -> tuple[int, int]:
    rng = random.Random(seed)
    pool = log_pool(rng, 8 * MiB)
    sizes = file_sizes(rng, count, total, KiB, 64 * MiB)
    written = 0
    for index, size in enumerate(sizes):
        folder = root / f"svc-{index % 5}" / ("archive" if index % 3 == 0 else "current")
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"app-{index:03d}.log").open("wb") as out:
            left = size
            while left:
                # Cut pieces from random places: no repeats within gzip's 32 KiB window.
                piece = min(left, rng.randint(64 * KiB, 256 * KiB))
                start = rng.randrange(0, len(pool) - piece)
                out.write(pool[start : start + piece])
                left -= piece
        written += size
    return len(sizes), written


# ---------------------------------------------------------------- the server and the proxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    until = time.monotonic() + 30
    while time.monotonic() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto's server did not start")


class CountingProxy:
    """TCP proxy on 127.0.0.1 counting the bytes clients send upstream."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._lock = threading.Lock()
        self.sent = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            for src, dst, count in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, count), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        buf = bytearray(1024 * 1024)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                if count:
                    with self._lock:
                        self.sent += n
        except OSError:
            pass
        finally:
            for sock in (dst, src):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


# ---------------------------------------------------------------- the runs


def timed(argv: list[str], env: dict[str, str], proxy: CountingProxy) -> tuple[float, int, str]:
    before = proxy.sent
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    time.sleep(0.2)  # let the proxy threads count the last bytes
    return seconds, proxy.sent - before, result.stdout


def count_objects(client: Any, bucket: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(len(page.get("Contents", [])) for page in pages)


def find_aws(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "aws"
    if beside.exists():
        return str(beside)
    found = shutil.which("aws")
    if found is None:
        raise SystemExit("aws-cli not found: pip install '.[bench]' (or pass --aws PATH)")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="200 files, 512 MiB")
    parser.add_argument("--files", type=int, help="number of files (default 100; --full 200)")
    parser.add_argument("--total-mib", type=int, help="tree size (default 128; --full 512)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the tools N times")
    parser.add_argument("--aws", help="the aws executable (default: beside this Python)")
    args = parser.parse_args()
    count = args.files or (200 if args.full else 100)
    total = (args.total_mib or (512 if args.full else 128)) * MiB
    aws = find_aws(args.aws)

    import boto3

    work = Path(tempfile.mkdtemp(prefix="spotwatch-bench-"))
    moto, port = start_moto()
    proxy = CountingProxy(port)
    try:
        tree = work / "logs"
        files, size = make_tree(tree, count, total)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPOTWATCH_"))}
        env.update(
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            AWS_ENDPOINT_URL=proxy.url,
            SPOTWATCH_INSTANCE_ID="i-0bench",
            SPOTWATCH_NOTICE_TIME="2026-11-26T03:00:25Z",
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        print(f"tree: {files} files, {size / MiB:.1f} MiB of log-like text, 1 KiB to 64 MiB")
        print(f"server: moto on 127.0.0.1:{port}, via a counting proxy; {os.cpu_count()} cores")
        tools = ["aws s3 cp", "spotwatch ship"]
        try:
            import isal  # noqa: F401

            # Show what the optional ISA-L gzip buys: the same run with stdlib zlib.
            tools.append("spotwatch (zlib)")
            print("gzip: ISA-L (isal package) for 'spotwatch ship', stdlib zlib for the last row")
        except ImportError:
            print("gzip: stdlib zlib (pip install isal for ISA-L's faster gzip)")
        results: dict[str, list[tuple[float, int]]] = {tool: [] for tool in tools}
        for round_ in range(args.rounds):
            order = tools if round_ % 2 == 0 else tools[::-1]
            for number, tool in enumerate(order):
                bucket = f"bench-{round_}-{number}-{tool.split()[0]}"
                s3.create_bucket(Bucket=bucket)
                run_env = dict(env)
                if tool.startswith("aws"):
                    argv = [
                        aws,
                        "s3",
                        "cp",
                        "--recursive",
                        "--only-show-errors",
                        str(tree),
                        f"s3://{bucket}/logs/",
                    ]
                else:
                    argv = [
                        sys.executable,
                        "-m",
                        "spotwatch",
                        "ship",
                        str(tree),
                        "--bucket",
                        bucket,
                        "--log-level",
                        "warning",
                    ]
                    if "zlib" in tool:
                        run_env["SPOTWATCH_SHIP_GZIP_FAST"] = "0"
                seconds, sent, _ = timed(argv, run_env, proxy)
                objects = count_objects(s3, bucket)
                if objects != files:
                    raise SystemExit(f"{tool}: {objects} objects in s3://{bucket}, not {files}")
                results[tool].append((seconds, sent))
        print()
        print(f"best of {args.rounds} round(s), the tools' order alternating")
        print(f"{'tool':<18}{'wall s':>9}{'bytes on the wire':>20}{'wire/source':>13}")
        best: dict[str, tuple[float, int]] = {}
        for tool, runs in results.items():
            seconds = min(r[0] for r in runs)
            sent = min(r[1] for r in runs)
            best[tool] = (seconds, sent)
            print(f"{tool:<18}{seconds:>9.2f}{sent:>20,}{sent / size:>13.3f}")
        (sw_s, sw_b), (aws_s, aws_b) = best["spotwatch ship"], best["aws s3 cp"]
        print()
        print(f"spotwatch/aws-cli: wall {sw_s / aws_s:.2f}x, bytes on the wire {sw_b / aws_b:.3f}x")
    finally:
        proxy.close()
        moto.terminate()
        try:
            moto.wait(timeout=10)
        except subprocess.TimeoutExpired:
            moto.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
