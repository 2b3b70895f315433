"""`spotwatch ship` end to end: a real subprocess, boto3 over real HTTP to moto on 127.0.0.1.

A small TCP proxy sits in front of moto where a test needs a slow link (an
upload still in flight at the deadline, a file appended to while it ships) or
needs to count bytes; a stub answers 403 AccessDenied to every request.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import free_port

MiB = 1024 * 1024
INSTANCE = "i-0123456789abcdef0"
NOTICE = "2026-11-26T03:00:25Z"
STAMP = "20261126T030025Z"
SMALL_PARTS = {  # multipart above 5 MiB, in 5 MiB parts (S3's minimum part size)
    "SPOTWATCH_SHIP_MULTIPART_THRESHOLD": str(5 * MiB),
    "SPOTWATCH_SHIP_CHUNK_SIZE": str(5 * MiB),
}

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- helpers


class Proxy:
    """A TCP proxy on 127.0.0.1: counts bytes sent upstream, optionally at ``rate`` B/s."""

    def __init__(self, upstream: str, rate: float | None = None) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._rate = rate
        self._lock = threading.Lock()
        self._next_free = 0.0
        self._sockets: list[socket.socket] = []
        self._closed = False
        self.sent = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream)
            except OSError:
                return
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(16384 if self._rate else 262144)
                if not data:
                    break
                if upstream:
                    self._throttle(len(data))
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _throttle(self, size: int) -> None:
        if not self._rate:
            return
        with self._lock:
            start = max(time.monotonic(), self._next_free)
            self._next_free = start + size / self._rate
            wake = self._next_free
        time.sleep(max(0.0, wake - time.monotonic()))

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


DENIED_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>R1</RequestId><HostId>H1</HostId></Error>"
)


class _DenyAll(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(DENIED_BODY)))
        self.end_headers()
        self.wfile.write(DENIED_BODY)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _deny

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def deny_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyAll)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def s3(aws_env: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    # The tests check checksums themselves; moto before 5.2 answers GETs of
    # multipart objects with a checksum that botocore's own check rejects.
    try:
        config = Config(response_checksum_validation="when_required")
    except TypeError:  # botocore before 1.36 does not check responses anyway
        config = Config()
    return boto3.client("s3", region_name="us-east-1", config=config)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"ship-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def run_ship(
    cmd: list[str], args: list[str], env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    full_env.update({"SPOTWATCH_INSTANCE_ID": INSTANCE, "SPOTWATCH_NOTICE_TIME": NOTICE})
    full_env.update(env or {})
    return subprocess.run(
        [*cmd, "ship", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def key_of(path: Path, gz: bool = True, prefix: str = "") -> str:
    base = f"{prefix}/" if prefix else ""
    return f"{base}{INSTANCE}/{STAMP}/{str(path).lstrip('/')}" + (".gz" if gz else "")


def snapshot(root: Path) -> dict[str, tuple[str, int, int, int]]:
    """What each file under ``root`` holds and when it last changed."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            digest = (
                hashlib.sha256(path.read_bytes()).hexdigest() if info.st_size < 64 * MiB else ""
            )
            state[str(path)] = (digest, info.st_size, info.st_mtime_ns, info.st_mode)
    return state


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("spotwatch ship: error:")]


def log_text(lines: int, start: int = 0) -> bytes:
    return b"".join(
        b"2026-11-26T03:00:%02dZ INFO [worker-%d] req=%08x GET /api/v1/items/%d 200 %d ms\n"
        % (i % 60, i % 7, i * 2654435761 % 2**32, i, i % 97)
        for i in range(start, start + lines)
    )


def no_multipart_uploads(s3: Any, bucket: str) -> bool:
    return not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "no-gzip"])
def test_files_directories_and_globs_arrive_byte_for_byte(
    tmp_path: Path, s3: Any, bucket: str, spotwatch_cmd: list[str], gz: bool
) -> None:
    logs = tmp_path / "logs"
    (logs / "sub").mkdir(parents=True)
    (logs / "app.log").write_bytes(log_text(2000))
    (logs / "sub" / "worker.log").write_bytes(log_text(50, 7))
    (logs / "empty.log").write_bytes(b"")
    (logs / "sub" / "core.bin").write_bytes(os.urandom(6 * MiB))  # 2 parts: 5 MiB and 1 MiB
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "a.txt").write_bytes(b"alpha\n")
    (extra / "b.txt").write_bytes(b"beta\n")
    (extra / "c.dat").write_bytes(b"not matched\n")
    single = tmp_path / "single.log"
    single.write_bytes(log_text(10))
    before = snapshot(tmp_path)

    args = [str(logs), str(extra / "*.txt"), str(single), "--json"]
    env = dict(SMALL_PARTS, SPOTWATCH_S3_PREFIX="fleet/web")
    if gz:
        env["SPOTWATCH_S3_BUCKET"] = bucket
    else:
        args += ["--bucket", bucket, "--no-gzip"]
    result = run_ship(spotwatch_cmd, args, env)

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["files"] == summary["files_shipped"] == 7
    assert summary["base"] == f"fleet/web/{INSTANCE}/{STAMP}/"
    originals = [
        logs / "app.log",
        logs / "sub" / "worker.log",
        logs / "empty.log",
        logs / "sub" / "core.bin",
        extra / "a.txt",
        extra / "b.txt",
        single,
    ]
    expected = {key_of(p, gz, "fleet/web"): p for p in originals}
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"] for o in listed} == set(expected)
    for key, path in expected.items():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (gzip.decompress(body) if gz else body) == path.read_bytes(), key
        checksum = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"]
        if path.name != "core.bin":  # a single PUT: the SHA-256 of exactly what arrived
            assert checksum == base64.b64encode(hashlib.sha256(body).digest()).decode(), key
    core = s3.head_object(Bucket=bucket, Key=key_of(logs / "sub" / "core.bin", gz, "fleet/web"))
    assert core["ETag"].strip('"').endswith("-2")  # multipart, in two parts
    if gz:
        text = next(e for e in summary["shipped"] if e["path"] == str(logs / "app.log"))
        assert text["bytes_sent"] < text["bytes"] / 3
    # One log event per file on stderr, JSON lines (stderr is not a TTY).
    uploaded = [
        json.loads(line) for line in result.stderr.splitlines() if '"ship.uploaded"' in line
    ]
    assert len(uploaded) == 7
    assert {"key", "bytes", "bytes_sent", "seconds"} <= set(uploaded[0])
    assert snapshot(tmp_path) == before
    assert no_multipart_uploads(s3, bucket)


def test_sse_and_storage_class_are_applied(
    tmp_path: Path, s3: Any, bucket: str, spotwatch_cmd: list[str]
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(log_text(100))
    result = run_ship(
        spotwatch_cmd,
        [str(log), "--bucket", bucket, "--sse", "AES256", "--storage-class", "standard_ia"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("shipped 1 of 1 files")
    head = s3.head_object(Bucket=bucket, Key=key_of(log))
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ContentType"] == "application/gzip"


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "no-gzip"])
def test_a_file_appended_to_while_it_ships_arrives_as_a_prefix(
    tmp_path: Path, s3: Any, bucket: str, moto_server: str, spotwatch_cmd: list[str], gz: bool
) -> None:
    log = tmp_path / "busy.log"
    # Without gzip ~7 MiB, multipart; with gzip ~2 MiB of text, ~0.5 MiB on the wire.
    lines = 30_000 if gz else 100_000
    log.write_bytes(log_text(lines))
    initial = log.stat().st_size
    proxy = Proxy(moto_server, rate=(0.25 if gz else 6) * MiB)
    stop = threading.Event()

    def append() -> None:
        line = lines
        with log.open("ab") as out:
            while not stop.is_set():
                out.write(log_text(20, line))
                out.flush()
                line += 20
                time.sleep(0.002)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        args = [str(log), "--bucket", bucket] + ([] if gz else ["--no-gzip"])
        result = run_ship(spotwatch_cmd, args, dict(SMALL_PARTS, AWS_ENDPOINT_URL=proxy.url))
    finally:
        stop.set()
        writer.join()
        proxy.close()

    assert result.returncode == 0, result.stderr
    body = s3.get_object(Bucket=bucket, Key=key_of(log, gz))["Body"].read()
    shipped = gzip.decompress(body) if gz else body
    final = log.read_bytes()
    assert len(shipped) >= initial
    assert len(final) > len(shipped)  # it kept growing after its size was read
    assert final[: len(shipped)] == shipped  # a prefix: never bytes past it, never garbage


# ---------------------------------------------------------------- the deadline


def test_a_short_deadline_ships_smallest_first_and_aborts_cleanly(
    tmp_path: Path, s3: Any, bucket: str, moto_server: str, spotwatch_cmd: list[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    small = []
    for i in range(5):
        path = logs / f"small-{i}.log"
        path.write_bytes(log_text(10 + i))
        small.append(path)
    medium = logs / "medium.bin"
    medium.write_bytes(os.urandom(12 * MiB))  # 24 s on a 512 KiB/s link: in flight at the end
    huge = logs / "huge.log"
    with huge.open("wb") as out:
        out.truncate(20 * 1024 * MiB)  # sparse: its likely duration is far past the deadline
    before = snapshot(tmp_path)
    proxy = Proxy(moto_server, rate=0.5 * MiB)
    # Slack for a loaded machine: starting Python and boto3 can take seconds.
    deadline = time.time() + 10
    try:
        result = run_ship(
            spotwatch_cmd,
            [str(logs), "--bucket", bucket, "--deadline", str(deadline), "--json"],
            dict(SMALL_PARTS, AWS_ENDPOINT_URL=proxy.url, SPOTWATCH_SHIP_ABORT_MARGIN="2"),
        )
    finally:
        proxy.close()
    finished = time.time()

    assert result.returncode == 1, result.stderr
    assert finished < deadline + 3  # stopped around the abort point, not at the end of uploads
    summary = json.loads(result.stdout)
    assert {e["path"] for e in summary["shipped"]} == {str(p) for p in small}
    reasons = {e["path"]: e["reason"] for e in summary["not_shipped"]}
    assert reasons == {str(medium): "aborted", str(huge): "deadline"}
    assert summary["not_shipped_by_reason"] == {"aborted": 1, "deadline": 1}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {key_of(p) for p in small}
    assert no_multipart_uploads(s3, bucket)
    assert '"ship.aborted"' in result.stderr
    assert snapshot(tmp_path) == before


def test_sigterm_aborts_uploads_in_flight(
    tmp_path: Path, s3: Any, bucket: str, moto_server: str, spotwatch_cmd: list[str]
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))
    proxy = Proxy(moto_server, rate=1 * MiB)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env.update(SMALL_PARTS, AWS_ENDPOINT_URL=proxy.url, SPOTWATCH_SHIP_ABORT_MARGIN="2")
    proc = subprocess.Popen(
        [*spotwatch_cmd, "ship", str(big), "--bucket", bucket, "--no-gzip", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        waited = time.monotonic() + 30
        while no_multipart_uploads(s3, bucket):  # wait until the upload is under way
            assert proc.poll() is None and time.monotonic() < waited
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        proxy.close()
    assert proc.returncode == 1, err
    summary = json.loads(out)
    assert summary["not_shipped"][0]["reason"] == "interrupted"
    assert no_multipart_uploads(s3, bucket)
    assert big.stat().st_size == 11 * MiB


# ---------------------------------------------------------------- faults


def test_access_denied_is_one_line_naming_the_permission(
    tmp_path: Path, deny_server: str, aws_env: dict[str, str], spotwatch_cmd: list[str]
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(log_text(100))
    before = snapshot(tmp_path)
    result = run_ship(
        spotwatch_cmd, [str(log), "--bucket", "logs-bucket"], {"AWS_ENDPOINT_URL": deny_server}
    )
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        "spotwatch ship: error: access denied: the credentials need s3:PutObject on "
        f"arn:aws:s3:::logs-bucket/{key_of(log)}"
    ]
    assert snapshot(tmp_path) == before


def test_a_bucket_that_does_not_exist_is_bad_input(
    tmp_path: Path, aws_env: dict[str, str], spotwatch_cmd: list[str]
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(log_text(100))
    before = snapshot(tmp_path)
    result = run_ship(spotwatch_cmd, [str(log), "--bucket", f"nope-{uuid.uuid4().hex[:8]}"])
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert "does not exist" in line
    assert snapshot(tmp_path) == before


def test_a_server_that_is_down_fails_fast_with_one_line(
    tmp_path: Path, aws_env: dict[str, str], spotwatch_cmd: list[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(20):
        (logs / f"{i}.log").write_bytes(log_text(10))
    before = snapshot(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_ship(
        spotwatch_cmd,
        [str(logs), "--bucket", "logs-bucket", "--json"],
        {"AWS_ENDPOINT_URL": url, "AWS_MAX_ATTEMPTS": "2"},
        timeout=60,
    )
    assert result.returncode == 1
    [line] = error_lines(result.stderr)
    assert line.startswith(f"spotwatch ship: error: cannot reach S3 at {url}")
    summary = json.loads(result.stdout)
    assert summary["files_shipped"] == 0 and summary["files"] == 20
    assert time.monotonic() - started < 30
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{log}"], "no bucket: pass --bucket or set SPOTWATCH_S3_BUCKET"),
        (["{tmp}/absent.log", "--bucket", "b-1"], "no such file or directory: {tmp}/absent.log"),
        (["{log}", "--bucket", "s3://b-1/x"], "takes a bucket name, not 's3://b-1/x'"),
        (["{log}", "--bucket", "b-1", "--deadline", "soon"], "--deadline must be epoch seconds"),
        (
            ["{log}", "--bucket", "b-1", "--sse", "AES256", "--kms-key-id", "k"],
            "--kms-key-id needs --sse aws:kms",
        ),
        (["{log}", "--bucket", "b-1", "--concurrency", "0"], "--concurrency must be between"),
        (["{log}", "--bucket", "b-1", "--storage-class", "cold!"], "is not a storage class"),
    ],
    ids=[
        "no-bucket",
        "no-path",
        "url-bucket",
        "bad-deadline",
        "kms-without-kms",
        "concurrency",
        "storage-class",
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    words: str,
) -> None:
    from spotwatch.cli import main

    log = tmp_path / "app.log"
    log.write_bytes(b"x\n")
    for name in [k for k in os.environ if k.startswith("SPOTWATCH_")]:
        monkeypatch.delenv(name)
    # Nothing may be sent: any S3 request would go to a port nobody listens on.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    argv = ["ship", *(a.format(log=log, tmp=tmp_path) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    [line] = error_lines(err)
    assert words.format(tmp=tmp_path) in line
    assert log.read_bytes() == b"x\n"


def test_a_missing_path_among_others_still_ships_the_others(
    tmp_path: Path, s3: Any, bucket: str, spotwatch_cmd: list[str]
) -> None:
    log = tmp_path / "app.log"
    log.write_bytes(log_text(10))
    result = run_ship(spotwatch_cmd, [str(log), str(tmp_path / "gone-*.log"), "--bucket", bucket])
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert "no such file or directory" in line and "gone-*.log" in line
    s3.head_object(Bucket=bucket, Key=key_of(log))


def test_dry_run_lists_the_plan_without_boto3_or_s3(tmp_path: Path) -> None:
    (tmp_path / "b.log").write_bytes(b"bb\n" * 100)
    (tmp_path / "a.log").write_bytes(b"a\n")
    code = (
        "import sys\n"
        "from spotwatch.cli import main\n"
        "rc = main(['ship', sys.argv[1], '--bucket', 'logs-bucket', '--dry-run', '--json',\n"
        "           '--log-format', 'json'])\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTWATCH_", "AWS_"))}
    env.update(
        SPOTWATCH_INSTANCE_ID=INSTANCE,
        SPOTWATCH_NOTICE_TIME=NOTICE,
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert [e["key"] for e in plan["shipped"]] == [
        key_of(tmp_path / "a.log"),
        key_of(tmp_path / "b.log"),
    ]
    summary = [json.loads(line) for line in result.stderr.splitlines()
               if '"ship.summary"' in line]
    assert len(summary) == 1 and summary[0]["dry_run"] is True
    assert summary[0]["files_planned"] == 2 and "files_shipped" not in summary[0]


def peak_rss(pid: int) -> int:
    """VmHWM of a running process, in bytes (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_gzip_memory_stays_bounded_for_a_big_file(
    tmp_path: Path, s3: Any, bucket: str, spotwatch_cmd: list[str]
) -> None:
    big = tmp_path / "big.log"
    with big.open("wb") as out:
        out.truncate(256 * MiB)  # sparse zeros: cheap to read, compresses to little
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOTWATCH_")}
    env.update(SPOTWATCH_INSTANCE_ID=INSTANCE, SPOTWATCH_NOTICE_TIME=NOTICE)
    with (tmp_path / "out").open("w") as out:
        proc = subprocess.Popen(
            [*spotwatch_cmd, "ship", str(big), "--bucket", bucket],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        peak = 0
        try:
            while proc.poll() is None:
                peak = max(peak, peak_rss(proc.pid))  # a high-water mark: polling misses nothing
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (tmp_path / "out").read_text()
    # boto3 and its threads take ~60 MiB; staging the file would add 256 MiB.
    assert 0 < peak < 150 * MiB, f"peak RSS {peak / MiB:.0f} MiB for a 256 MiB file"
    head = s3.head_object(Bucket=bucket, Key=key_of(big))
    assert head["ContentLength"] < 2 * MiB


def test_a_missing_bucket_is_said_once_however_many_files(
    tmp_path: Path, aws_env: dict[str, str], spotwatch_cmd: list[str]
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(5):
        (logs / f"app{i}.log").write_bytes(log_text(100 * (i + 1)))
    name = f"nope-{uuid.uuid4().hex[:8]}"
    result = run_ship(spotwatch_cmd, [str(logs), "--bucket", name])
    assert result.returncode == 2
    [line] = error_lines(result.stderr)
    assert f"bucket '{name}' does not exist" in line
    # ship.fatal once, the summary's error, the last line: never once per file.
    assert result.stderr.count("does not exist") == 3, result.stderr
    events = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
    per_file = [e for e in events if e["event"] in ("ship.failed", "ship.aborted")]
    assert len(per_file) == 5
    assert all("(ship.fatal)" in e["detail"] for e in per_file), per_file
