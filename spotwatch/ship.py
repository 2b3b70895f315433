"""`spotwatch ship`: get log files into S3 before the instance is gone.

Files go smallest first through boto3's transfer manager (s3transfer): parallel,
multipart above a threshold, a SHA-256 checksum on every request, the standard
retry mode, gzip streamed block by block. An upload starts only when its likely
duration (``ship_plan.Estimator``) fits in the time left; shortly before the
deadline, or on SIGTERM/SIGINT, uploads in flight are cancelled and their
multipart uploads aborted, so nothing is left half-open in the bucket. Local
files are only ever opened for reading.

boto3 is imported inside the functions that talk to S3: ``spotwatch run`` and
``spotwatch --help`` never pay for it.
"""

from __future__ import annotations

import os
import queue
import signal
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

from spotwatch import __version__, regions
from spotwatch.errors import EXIT_FAILURE, EXIT_USAGE, UsageError
from spotwatch.logs import get_logger
from spotwatch.ship_files import find_files
from spotwatch.ship_plan import (
    ABORTED,
    DEADLINE,
    FAILED,
    INTERRUPTED,
    NOT_SHIPPED,
    SHIPPED,
    SHRANK,
    STOPPED,
    UNREADABLE,
    VANISHED,
    Candidate,
    Estimator,
    Outcome,
    Report,
    Verdict,
    exit_status,
    fits,
    judge_s3_error,
    key_base,
    likely_schedule,
    notice_stamp,
    object_key,
    one_line,
    smallest_first,
)
from spotwatch.ship_stream import CappedReader, FileShrankError, GzipReader, ShipCancelledError
from spotwatch.stopper import Stopper

MiB = 1024 * 1024
SSE_CHOICES = ("aws:kms", "AES256")
# What each file stopped by an error every upload would hit says, instead of the error again.
FATAL_DETAIL = "the error that stops every upload (ship.fatal)"


@dataclass(frozen=True)
class ShipOptions:
    """What to ship where; the command line and the hook environment resolved."""

    paths: tuple[str, ...]
    bucket: str
    prefix: str = ""
    gzip: bool = True
    deadline: float | None = None  # epoch seconds; None: no deadline
    concurrency: int = 10
    sse: str = ""
    kms_key_id: str = ""
    storage_class: str = ""
    dry_run: bool = False
    instance_id: str = "unknown"
    notice_time: str = ""  # as IMDS gave it
    region: str = ""  # --region; empty: the order in spotwatch.regions


@dataclass(frozen=True)
class Tuning:
    """Knobs with sane defaults; tests and the benchmark shrink them."""

    multipart_threshold: int = 8 * MiB
    chunk_size: int = 8 * MiB
    abort_margin: float = 3.0  # seconds before the deadline at which uploads in flight stop
    gzip_level: int = 3  # zlib's 3: ~4.5x on logs at ~100 MB/s a core
    fast_gzip: bool = True  # ISA-L's gzip when the isal package is installed (~4x faster)
    estimator: Estimator = field(default_factory=Estimator)


@dataclass(frozen=True)
class Clocks:
    """Seams for time: ``monotonic`` measures, ``wall`` turns the epoch deadline into it."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


def ship(
    options: ShipOptions, tuning: Tuning | None = None, clocks: Clocks | None = None
) -> Report:
    """Ship ``options.paths`` to S3 (or plan it, with ``dry_run``) and say what went."""
    tuning = tuning or Tuning()
    clocks = clocks or Clocks()
    started = clocks.monotonic()
    base = key_base(
        options.prefix, options.instance_id, notice_stamp(options.notice_time, clocks.wall())
    )
    found = find_files(options.paths)
    if found.missing and not found.candidates and not found.unreadable:
        raise UsageError(_missing_message(found.missing))
    abort_at = None
    if options.deadline is not None:
        abort_at = started + (options.deadline - clocks.wall()) - tuning.abort_margin

    log = get_logger()
    for path in found.ignored:
        log.info(
            "ship.ignored", path=path, reason="not a regular file, or a symlink inside a directory"
        )
    early = [
        Outcome(
            path=p,
            key=object_key(base, p, False),
            size=0,
            status=NOT_SHIPPED,
            reason=UNREADABLE,
            detail="could not be listed or read",
        )
        for p in found.unreadable
    ]
    for outcome in early:
        log.warning(
            "ship.skipped", path=outcome.path, bytes=0, reason=outcome.reason, detail=outcome.detail
        )
    ordered = smallest_first(found.candidates)
    if options.dry_run:
        outcomes = early + _plan_dry_run(ordered, options, tuning, base, abort_at, started)
        fatal: Verdict | None = None
        abandoned = 0
    else:
        run = _Run(options, tuning, clocks, base, abort_at)
        outcomes = early + run.execute(ordered)
        fatal = run.fatal
        abandoned = run.abandoned
    error = fatal.message if fatal is not None else ""
    if found.missing:
        missing = _missing_message(found.missing)
        error = f"{error}; also {missing}" if error else f"{missing} (the other paths were shipped)"
    report = Report(
        bucket=options.bucket,
        base=base,
        outcomes=tuple(outcomes),
        seconds=clocks.monotonic() - started,
        error=error,
        exit_code=exit_status(outcomes, fatal.exit_code if fatal else None, bool(found.missing)),
        dry_run=options.dry_run,
        ignored=found.ignored,
        abandoned=abandoned,
        deadline=options.deadline,
    )
    # A dry run sent nothing: its log names what it would ship, not "shipped".
    counts = (
        {"files_planned": len(report.shipped),
         "bytes_planned": sum(o.size for o in report.shipped)}
        if report.dry_run else
        {"files_shipped": len(report.shipped),
         "bytes_shipped": sum(o.size for o in report.shipped),
         "bytes_sent": sum(o.bytes_sent for o in report.shipped)}
    )  # fmt: skip
    log.info(
        "ship.summary",
        bucket=report.bucket,
        base=report.base,
        files=len(report.outcomes),
        **counts,
        not_shipped=report.reasons(),
        seconds=round(report.seconds, 3),
        exit_code=report.exit_code,
        error=report.error or None,
        dry_run=report.dry_run,
    )
    return report


def _missing_message(missing: Sequence[str]) -> str:
    return "no such file or directory: " + ", ".join(missing)


def _plan_dry_run(
    ordered: Sequence[Candidate],
    options: ShipOptions,
    tuning: Tuning,
    base: str,
    abort_at: float | None,
    now: float,
) -> list[Outcome]:
    """What a real run would likely do at the assumed throughput; nothing is sent."""
    log = get_logger()
    verdicts = likely_schedule(ordered, options.concurrency, now, abort_at, tuning.estimator)
    outcomes: list[Outcome] = []
    for candidate, starts in zip(ordered, verdicts):
        key = object_key(base, candidate.path, options.gzip)
        if starts:
            outcomes.append(Outcome(candidate.path, key, candidate.size, SHIPPED))
            log.info("ship.planned", path=candidate.path, key=key, bytes=candidate.size)
        else:
            detail = "not started: its likely duration exceeds the time left"
            outcomes.append(
                Outcome(candidate.path, key, candidate.size, NOT_SHIPPED, DEADLINE, detail)
            )
            log.info(
                "ship.skipped",
                path=candidate.path,
                key=key,
                bytes=candidate.size,
                reason=DEADLINE,
                detail=detail,
            )
    return outcomes


# ---------------------------------------------------------------- the real run


@dataclass
class _Flight:
    candidate: Candidate
    key: str
    handle: BinaryIO
    body: CappedReader | GzipReader
    size: int
    started: float
    future: Any = None


class _OpenUploads:
    """Multipart uploads created by this run, by key, for a last abort at the end.

    s3transfer aborts a failed multipart upload itself; S3 documents that a
    part still in flight during an abort may survive it, so every upload that
    did not complete is aborted once more when the run ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, str] = {}

    def created(self, parsed: Any = None, **_: Any) -> None:
        if isinstance(parsed, dict) and "UploadId" in parsed and "Key" in parsed:
            with self._lock:
                self._ids[str(parsed["Key"])] = str(parsed["UploadId"])

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._ids)


class _Run:
    """One upload run: the loop that starts uploads, waits, and stops in time."""

    def __init__(
        self,
        options: ShipOptions,
        tuning: Tuning,
        clocks: Clocks,
        base: str,
        abort_at: float | None,
    ) -> None:
        self.options = options
        self.tuning = tuning
        self.clocks = clocks
        self.base = base
        self.abort_at = abort_at
        self.estimator = tuning.estimator
        self.fatal: Verdict | None = None
        self.stop_reason = ""
        self.events: queue.SimpleQueue[tuple[str, int, float]] = queue.SimpleQueue()
        self.stop = threading.Event()  # tells the readers of this run's uploads to give up
        self.flights: dict[int, _Flight] = {}
        self.outcomes: list[Outcome] = []
        self.open_uploads = _OpenUploads()
        self.log = get_logger()
        self.abandoned = 0  # uploads still running when the run gave up waiting
        self._tokens = 0

    # -- set-up -------------------------------------------------------------

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        try:
            session = boto3.session.Session()
            if session.get_credentials() is None:
                raise UsageError(
                    "no AWS credentials found: attach an instance role, or set "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
                )
            found = regions.resolve(
                self.options.region, os.environ, lambda: session.region_name,
                # In a hook the daemon already named the instance's region.
                lambda: _hook_region() or regions.instance_region(os.environ),
            )
            # None found: us-east-1 answers for any bucket and botocore follows
            # its redirect to the bucket's region.
            region = found.name if found else "us-east-1"
            config = Config(
                retries={"mode": "standard"},  # AWS_MAX_ATTEMPTS still applies
                max_pool_connections=self.options.concurrency + 4,
                connect_timeout=5,
                read_timeout=30,
                user_agent_extra=f"spotwatch/{__version__}",
            )
            client = session.client("s3", region_name=region, config=config)
        except BotoCoreError as exc:
            raise UsageError(f"cannot set up the S3 client: {one_line(str(exc))}") from exc
        client.meta.events.register(
            "after-call.s3.CreateMultipartUpload", self.open_uploads.created
        )
        return client

    def _extra_args(self) -> dict[str, str]:
        extra = {"ChecksumAlgorithm": "SHA256"}
        if self.options.gzip:
            extra["ContentType"] = "application/gzip"
        if self.options.sse:
            extra["ServerSideEncryption"] = self.options.sse
        if self.options.kms_key_id:
            extra["SSEKMSKeyId"] = self.options.kms_key_id
        if self.options.storage_class:
            extra["StorageClass"] = self.options.storage_class
        return extra

    # -- the loop -----------------------------------------------------------

    def execute(self, ordered: Sequence[Candidate]) -> list[Outcome]:
        if not ordered:
            return []
        from s3transfer.manager import TransferConfig, TransferManager

        client = self._client()
        manager = TransferManager(
            client,
            TransferConfig(
                multipart_threshold=self.tuning.multipart_threshold,
                multipart_chunksize=self.tuning.chunk_size,
                max_request_concurrency=self.options.concurrency,
                max_submission_concurrency=self.options.concurrency,
            ),
        )
        self.signals = _signals()  # SIGTERM/SIGINT, routed here while uploading
        pending = list(reversed(ordered))  # pop() takes the smallest
        drained = True
        try:
            self._loop(manager, pending)
            if self.flights:
                self._cancel_flights()
                drained = self._drain()
        finally:
            self.signals.close()
            self.stop.set()
            if drained:
                manager.shutdown()
            self._abort_leftovers(client)
        reason = self._pending_reason()
        for candidate in reversed(pending):
            key = object_key(self.base, candidate.path, self.options.gzip)
            self._record(
                Outcome(
                    candidate.path,
                    key,
                    candidate.size,
                    NOT_SHIPPED,
                    reason,
                    self._pending_detail(reason),
                )
            )
        return self.outcomes

    def _loop(self, manager: Any, pending: list[Candidate]) -> None:
        while True:
            if self.signals.signum is not None and not self.stop_reason:
                self.log.warning("ship.signal", signal=signal.Signals(self.signals.signum).name)
                self.stop_reason = INTERRUPTED
            now = self.clocks.monotonic()
            if not self.stop_reason and self.abort_at is not None and now >= self.abort_at:
                self.stop_reason = ABORTED
            if self.stop_reason:
                return
            while pending and len(self.flights) < self.options.concurrency:
                candidate = pending[-1]
                if not fits(candidate.size, now, self.abort_at, self.estimator):
                    break
                pending.pop()
                self._start(manager, candidate)
                if self.stop_reason:
                    return
            if not self.flights:
                # Nothing running: either all done, or the smallest file left will
                # not make it and no upload in flight can improve the estimate.
                if pending:
                    self.stop_reason = DEADLINE
                return
            timeout = 0.25  # re-check the deadline and what fits at least this often
            if self.abort_at is not None:
                timeout = max(0.0, min(timeout, self.abort_at - now))
            self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        """Sleep until an upload ends (its subscriber wakes us), a signal, or ``timeout``."""
        if self.events.empty():
            self.signals.wait(timeout)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _handle(self, event: tuple[str, int, float]) -> None:
        _kind, token, when = event  # ("done", token, when): the only kind queued
        flight = self.flights.pop(token, None)
        if flight is not None:
            self._finish(flight, when)

    def _not_started(self, candidate: Candidate, key: str, reason: str, detail: str) -> None:
        self._record(Outcome(candidate.path, key, candidate.size, NOT_SHIPPED, reason, detail))

    def _start(self, manager: Any, candidate: Candidate) -> None:
        key = object_key(self.base, candidate.path, self.options.gzip)
        try:
            handle: BinaryIO = open(candidate.path, "rb")  # noqa: SIM115 (closed in _finish)
        except FileNotFoundError:
            self._not_started(candidate, key, VANISHED, "gone before its upload began")
            return
        except OSError as exc:
            self._not_started(candidate, key, UNREADABLE, one_line(exc.strerror or str(exc)))
            return
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            handle.close()
            self._not_started(candidate, key, VANISHED, "no longer a regular file")
            return
        size = info.st_size  # read first: the upload stops here even if the file grows
        body: CappedReader | GzipReader
        if self.options.gzip:
            body = GzipReader(
                handle, size, self.stop, self.tuning.gzip_level, self.tuning.fast_gzip
            )
        else:
            body = CappedReader(handle, size, self.stop)
        self._tokens += 1
        token = self._tokens
        flight = _Flight(candidate, key, handle, body, size, self.clocks.monotonic())
        try:
            flight.future = manager.upload(
                body,
                self.options.bucket,
                key,
                extra_args=self._extra_args(),
                subscribers=[
                    _make_subscriber(self.events, token, self.clocks.monotonic, self.signals.wake)
                ],
            )
        except Exception as exc:  # refused before anything was sent
            handle.close()
            detail = one_line(f"{type(exc).__name__}: {exc}")
            self._record(Outcome(candidate.path, key, size, NOT_SHIPPED, FAILED, detail))
            return
        self.flights[token] = flight

    def _finish(self, flight: _Flight, ended: float) -> None:
        flight.handle.close()
        candidate, key = flight.candidate, flight.key
        try:
            flight.future.result()
        except BaseException as exc:
            reason, detail = self._explain(exc, key)
            event = "ship.aborted" if reason in (ABORTED, INTERRUPTED, STOPPED) else ""
            self._record(
                Outcome(candidate.path, key, flight.size, NOT_SHIPPED, reason, detail), event
            )
            return
        seconds = max(ended - flight.started, 0.0)
        self.estimator = self.estimator.observe(flight.size, seconds)
        self._record(
            Outcome(
                candidate.path,
                key,
                flight.size,
                SHIPPED,
                bytes_sent=flight.body.bytes_out,
                seconds=seconds,
            )
        )

    def _explain(self, exc: BaseException, key: str) -> tuple[str, str]:
        """The reason and detail of a failed upload; notes errors every upload would hit."""
        from concurrent.futures import CancelledError

        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        if isinstance(exc, (CancelledError, ShipCancelledError)) and self.stop_reason:
            return self.stop_reason, self._pending_detail(self.stop_reason, in_flight=True)
        if isinstance(exc, FileShrankError):
            return SHRANK, one_line(str(exc))
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(
                error.get("Code", "")
                or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
            )
            verdict = judge_s3_error(
                code,
                str(error.get("Message", "")),
                str(getattr(exc, "operation_name", "")),
                self.options.bucket,
                key,
                self.options.sse == "aws:kms",
            )
            if verdict.fatal:
                return FAILED, self._fail_all(verdict)
            return FAILED, verdict.message
        if isinstance(exc, ConnectionError):
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the S3 endpoint"
            return FAILED, self._fail_all(
                Verdict(
                    f"cannot reach S3 at {endpoint} (after retries): {one_line(str(exc))}",
                    fatal=True,
                    exit_code=EXIT_FAILURE,
                )
            )
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return FAILED, self._fail_all(
                Verdict(
                    f"bad AWS credentials: {one_line(str(exc))}", fatal=True, exit_code=EXIT_USAGE
                )
            )
        return FAILED, one_line(f"{type(exc).__name__}: {exc}")

    def _fail_all(self, verdict: Verdict) -> str:
        """Stop every upload for ``verdict``; the failed file's detail.

        The message is logged once (``ship.fatal``) and ends the run's report;
        each file it stops refers to it rather than repeating it.
        """
        if self.fatal is None:
            self.fatal = verdict
            self.log.error("ship.fatal", error=verdict.message)
        if not self.stop_reason:
            self.stop_reason = STOPPED
        return FATAL_DETAIL

    # -- stopping -----------------------------------------------------------

    def _cancel_flights(self) -> None:
        self.stop.set()  # readers give up at their next block
        for flight in self.flights.values():
            if flight.future is not None:
                flight.future.cancel()

    def _drain(self) -> bool:
        """Wait a little for cancelled uploads to wind down; True if they all did."""
        grace = max(1.0, self.tuning.abort_margin * 0.6)
        until = self.clocks.monotonic() + grace
        while self.flights:
            left = until - self.clocks.monotonic()
            if left <= 0:
                break
            self._wait(min(left, 0.25))
        for flight in self.flights.values():
            # Still running (a request that will not end): report it, leave the thread.
            self._record(
                Outcome(
                    flight.candidate.path,
                    flight.key,
                    flight.size,
                    NOT_SHIPPED,
                    self.stop_reason or ABORTED,
                    "still in flight when spotwatch gave up waiting",
                ),
                "ship.aborted",
            )
        self.abandoned = len(self.flights)
        self.flights.clear()
        return self.abandoned == 0

    def _abort_leftovers(self, client: Any) -> None:
        """Abort every multipart upload of this run that did not complete."""
        shipped = {o.key for o in self.outcomes if o.status == SHIPPED}
        leftovers = {k: u for k, u in self.open_uploads.snapshot().items() if k not in shipped}
        if self.abandoned:
            # A CreateMultipartUpload still in flight has not told us its id yet:
            # look for it (needs s3:ListBucketMultipartUploads; skipped without it).
            ours = {o.key for o in self.outcomes if o.status != SHIPPED}
            try:
                listing = client.list_multipart_uploads(
                    Bucket=self.options.bucket, Prefix=self.base
                )
            except Exception as exc:
                self.log.debug("ship.list_uploads_failed", error=one_line(str(exc)))
            else:
                for upload in listing.get("Uploads", []):
                    if upload.get("Key") in ours:
                        leftovers.setdefault(str(upload["Key"]), str(upload["UploadId"]))
        for key, upload_id in leftovers.items():
            try:
                client.abort_multipart_upload(
                    Bucket=self.options.bucket, Key=key, UploadId=upload_id
                )
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
                if code == "NoSuchUpload":
                    continue  # s3transfer already aborted it: the usual case
                self.log.warning(
                    "ship.abort_failed",
                    key=key,
                    upload_id=upload_id,
                    error=one_line(str(exc)),
                    hint="needs s3:AbortMultipartUpload; a lifecycle rule "
                    "AbortIncompleteMultipartUpload cleans up the rest",
                )
            else:
                self.log.info("ship.multipart_aborted", key=key, upload_id=upload_id)

    def _pending_reason(self) -> str:
        """Why files that never started did not: the deadline, a signal or a fatal error."""
        return self.stop_reason if self.stop_reason in (INTERRUPTED, STOPPED) else DEADLINE

    def _pending_detail(self, reason: str, in_flight: bool = False) -> str:
        if reason == DEADLINE:
            return "not started: its likely duration exceeds the time left"
        if reason == ABORTED:
            return "aborted shortly before the deadline" if in_flight else "deadline reached"
        if reason == INTERRUPTED:
            return "spotwatch was told to stop"
        if reason == STOPPED and self.fatal is not None:
            return ("called off after " if in_flight else "not attempted after ") + FATAL_DETAIL
        return ""

    # -- reporting ----------------------------------------------------------

    def _record(self, outcome: Outcome, event: str = "") -> None:
        """Keep ``outcome`` and log it: uploaded, failed, aborted (in flight) or skipped."""
        self.outcomes.append(outcome)
        if outcome.status == SHIPPED:
            self.log.info(
                "ship.uploaded",
                key=outcome.key,
                bytes=outcome.size,
                bytes_sent=outcome.bytes_sent,
                seconds=round(outcome.seconds, 3),
                path=outcome.path,
            )
            return
        name = event or ("ship.failed" if outcome.reason in (FAILED, SHRANK) else "ship.skipped")
        self.log.warning(
            name,
            key=outcome.key,
            bytes=outcome.size,
            path=outcome.path,
            reason=outcome.reason,
            detail=outcome.detail,
        )


def _make_subscriber(
    events: queue.SimpleQueue[tuple[str, int, float]],
    token: int,
    clock: Callable[[], float],
    wake: Callable[[], None],
) -> Any:
    from s3transfer.subscribers import BaseSubscriber

    class _Done(BaseSubscriber):  # type: ignore[misc]
        def on_done(self, future: Any, **kwargs: Any) -> None:
            events.put(("done", token, clock()))
            wake()  # after the put: the loop, woken, finds the event

    return _Done()


def _signals() -> Stopper:
    """SIGTERM/SIGINT only recorded; the loop cancels and aborts (main thread only)."""
    stopper = Stopper()
    if threading.current_thread() is threading.main_thread():
        stopper.install()
    return stopper


def _hook_region() -> str:
    region = os.environ.get("SPOTWATCH_REGION", "")
    return "" if region in ("", "unknown") else region
