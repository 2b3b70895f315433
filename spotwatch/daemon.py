"""Wiring for ``spotwatch run`` (and the drill): real clients, journal, signals, systemd.

Imports only what the idle daemon needs: requests, structlog, tenacity. Never boto3.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from spotwatch.cloud_sources import interval_for
from spotwatch.config import RunConfig
from spotwatch.errors import UsageError
from spotwatch.logs import get_logger
from spotwatch.stopper import Stopper
from spotwatch.watcher import Listener, ShutdownLink, SignalReport, Watcher, WatchSettings

if TYPE_CHECKING:
    from spotwatch.followup import FollowUp
    from spotwatch.imds import ImdsClient
    from spotwatch.notice import Identity


def check_directories(config: RunConfig) -> None:
    """Fail fast, with the fix, on a hooks or state directory we cannot use."""
    hooks_dir = config.hooks_dir
    if not hooks_dir.is_dir():
        what = "is not a directory" if hooks_dir.exists() else "does not exist"
        raise UsageError(
            f"hooks directory {hooks_dir} {what}: create it (mkdir -p {hooks_dir}) "
            "or point --hooks-dir / SPOTWATCH_HOOKS_DIR at yours"
        )
    resume_dir = config.resume_dir  # may be missing (no way back is run), never a file
    if resume_dir.exists() and not resume_dir.is_dir():
        raise UsageError(
            f"resume hooks directory {resume_dir} is not a directory: remove it, or point "
            "--resume-dir / SPOTWATCH_RESUME_DIR at a directory"
        )
    from spotwatch import statedir

    state_dir = config.state_dir
    try:
        statedir.make(state_dir)
    except OSError as exc:
        raise UsageError(
            f"cannot create state directory {state_dir}: {exc.strerror}; "
            "use --state-dir / SPOTWATCH_STATE_DIR to pick a writable one"
        ) from None
    problem = statedir.unusable(state_dir)
    if problem is not None:
        raise UsageError(problem)


def build_watcher(
    config: RunConfig,
    *,
    stop: Stopper,
    drill: bool = False,
    max_notices: int | None = None,
    listener: Listener | None = None,
    signals: SignalReport | None = None,
    shutdown: ShutdownLink | None = None,
) -> Watcher:
    """The watcher for ``config``. A drill passes its own ``shutdown`` link (or none):
    only the daemon asks systemd, and only it keeps the boot record."""
    from spotwatch import hooks, orphans, runner
    from spotwatch.imds import ImdsClient, ImdsError, read_identity
    from spotwatch.journal import Journal
    from spotwatch.monitors import RebalanceMonitor, SpotInterruptionMonitor
    from spotwatch.sdnotify import Notifier

    # One poll (retries, the termination-time fallback and every AWS source
    # included) must fit well inside the interval.
    budget = poll_budget(config.interval)
    client = ImdsClient(config.imds_url, budget=budget, stop=stop)
    sources = config.sources
    monitors: list[object] = []
    if "spot" in sources:
        monitors.append(SpotInterruptionMonitor(client))
    if "rebalance" in sources:
        monitors.append(RebalanceMonitor(client))
    # Issue 12: on Google and Azure, their own monitors, identity and follow-ups.
    cloud = decide_cloud(config)
    if not drill:
        from spotwatch.config import check_margin

        check_margin(config, cloud)
    if cloud == "aws":
        monitors += _aws_monitors(config, client)
    from spotwatch.hook_env import environ_for_hooks

    interval = interval_for(cloud, config.interval, config.interval_given)
    read_identity_now = lambda: read_identity(client)  # noqa: E731
    followups: list[object] = []
    if cloud == "aws":
        followups = list(_followups(config, client, read_identity))
    else:
        from spotwatch import cloud_sources

        other = cloud_sources.build(
            cloud, config.imds_url, config.sources, interval=interval,
            approve=not config.no_approve, wake=stop.wake,
            maintenance_lead=config.maintenance_lead,
        )  # fmt: skip
        monitors, read_identity_now = list(other.monitors), other.read_identity
        followups = list(other.followups)
    environ = {**environ_for_hooks(os.environ), "SPOTWATCH_CLOUD": cloud}
    settings = WatchSettings(
        interval=interval,
        hooks_dir=config.hooks_dir,
        hooks=runner.HookSettings(
            hook_timeout=config.hook_timeout,
            deadline_margin=config.deadline_margin,
            output_head=config.hook_output_head,
            output_tail=config.hook_output_tail,
        ),
        drill=drill,
        max_notices=max_notices,
        resume_dir=config.resume_dir,
    )
    notifier = Notifier()

    def settle_orphan(orphan: orphans.Orphan, until: float) -> str:
        return orphans.settle(
            orphan, until, kill_grace=settings.hooks.kill_grace, log=get_logger(),
            keep_alive=notifier.watchdog_if_due, stopping=stop.is_set, wait=stop.wait,
        )  # fmt: skip

    from spotwatch.boot import BootRecord
    from spotwatch.shutdown import SystemShutdown

    journal = Journal(config.state_dir)
    boot = None if drill else BootRecord(config.state_dir, boot_id_path=boot_id_path())
    if boot is not None:
        boot.log_previous_end(lambda notice_id: list(journal.finished_hooks(notice_id)))
    return Watcher(
        settings,
        monitors=monitors,  # type: ignore[arg-type]
        read_identity=read_identity_now,
        journal=journal,
        stop=stop,
        notifier=notifier,
        plan=hooks.plan_hooks,
        runner=runner.run_hooks,
        hook_environment=hooks.notice_environment,
        fault_types=(ImdsError,),
        environ=environ,
        listener=listener,
        followups=followups,  # type: ignore[arg-type]
        signals=signals,
        settle_orphan=None if drill else settle_orphan,
        group_record=orphans.group_record,
        shutdown=shutdown
        if drill
        else SystemShutdown(
            signals=lambda: stop.signals, cloud=cloud, runs_hooks="shutdown" in sources
        ),
        boot=boot,
        # On AWS one poll's GETs (fallback and every source) share the budget.
        poll_scope=client.poll_window if cloud == "aws" else nullcontext,
    )


def boot_id_path() -> Path:
    """Where the boot id is read (SPOTWATCH_BOOT_ID_FILE: tests)."""
    from spotwatch.boot import BOOT_ID_PATH

    return Path(os.environ.get("SPOTWATCH_BOOT_ID_FILE") or BOOT_ID_PATH)


def poll_budget(interval: float) -> float:
    """Seconds one AWS poll may take: 80% of the interval, at least 0.5 s, at most 4 s."""
    return max(0.5, min(4.0, interval * 0.8))


def decide_cloud(config: RunConfig) -> str:
    """The cloud to watch, logged once with why (issue 12). SPOTWATCH_DMI_DIR: tests."""
    from spotwatch import cloud

    dmi_dir = Path(os.environ.get("SPOTWATCH_DMI_DIR") or cloud.DMI_DIR)
    decision = cloud.decide(config.cloud, config.imds_url, dmi_dir=dmi_dir)
    get_logger().info(
        "cloud.decided", cloud=decision.cloud, how=decision.how, reason=decision.reason
    )
    ignored = [s for s in config.sources if s not in _SOURCES_ON[decision.cloud]]
    if ignored:
        get_logger().warning(
            "cloud.sources_ignored",
            cloud=decision.cloud,
            sources=ignored,
            note=f"not available on {decision.cloud}; see the README's table of sources per cloud",
        )
    return decision.cloud


_SOURCES_ON = {
    "aws": ("spot", "rebalance", "maintenance", "asg", "shutdown"),
    "gcp": ("spot", "maintenance", "migrate", "shutdown"),
    "azure": ("spot", "rebalance", "maintenance", "shutdown"),
}


def _aws_monitors(config: RunConfig, client: ImdsClient) -> list[object]:
    """The Auto Scaling and scheduled maintenance monitors, if watched."""
    monitors: list[object] = []
    if "maintenance" in config.sources:
        from spotwatch.maintenance import MaintenanceMonitor

        monitors.append(MaintenanceMonitor(client, lead=config.maintenance_lead))
    if "asg" in config.sources:
        from spotwatch.asg import AsgTerminationMonitor

        monitors.append(
            AsgTerminationMonitor(
                client, deadline_seconds=config.asg_deadline, group_name=config.asg_name
            )
        )
    return monitors


def _followups(
    config: RunConfig, client: ImdsClient, read_identity: Callable[[ImdsClient], Identity]
) -> list[FollowUp]:
    """``--asg-lifecycle-hook``: heartbeats and CompleteLifecycleAction around the hooks.
    The Auto Scaling client (boto3) is made on the follow-up's thread, when needed."""
    if "asg" not in config.sources or not config.asg_lifecycle_hook:
        return []
    from spotwatch import lifecycle
    from spotwatch.asg import LifecycleFollowUp

    known: list[Identity] = []

    def identity() -> Identity:
        if not known:
            known.append(read_identity(client))
        return known[0]

    return [
        LifecycleFollowUp(
            hook=config.asg_lifecycle_hook,
            group=config.asg_name,
            make_client=lambda: lifecycle.make_client(
                identity().region, endpoint=lifecycle.endpoint_url()
            ),
            instance_id=lambda: identity().instance_id,
        )
    ]


def run_daemon(config: RunConfig) -> int:
    """``spotwatch run``: watch until SIGTERM or SIGINT."""
    check_directories(config)
    from spotwatch import statedir

    # Held until the process ends: a second daemon on this journal would run every hook twice.
    lock = statedir.acquire(config.state_dir)
    # Like any daemon, hold no directory busy; hooks run in / and can then be
    # started with posix_spawn (see runner). Paths given relative stay valid.
    config = dataclasses.replace(
        config,
        hooks_dir=config.hooks_dir.absolute(),
        state_dir=config.state_dir.absolute(),
        resume_dir=config.resume_dir.absolute(),
    )
    recorder = None
    if config.metrics_file is not None:
        from spotwatch import metrics

        # Checked (and made absolute) before the chdir.
        metrics_path = metrics.check_path(config.metrics_file)
        config = dataclasses.replace(config, metrics_file=metrics_path)
        recorder = metrics.DaemonMetrics(metrics.MetricsFile(metrics_path))
    os.chdir("/")
    log = get_logger()
    stop = Stopper()
    stop.install()
    from spotwatch.signal_notes import SignalNotes

    stop.install_noted()
    notes = SignalNotes(stop, log)
    try:
        watcher = build_watcher(
            config,
            stop=stop,
            listener=recorder.listener if recorder is not None else None,
            signals=notes,
        )
        log.info(
            "spotwatch.started",
            pid=os.getpid(),
            imds_url=config.imds_url,
            state_dir=str(config.state_dir),
            resume_dir=str(config.resume_dir),
            hook_timeout=config.hook_timeout,
            deadline_margin=config.deadline_margin,
            on_rebalance=config.on_rebalance,
            metrics_file=str(config.metrics_file) if config.metrics_file else None,
            watch=list(config.sources),
            interval=watcher.settings.interval,
        )
        status = watcher.run()
        if stop.signum is not None:
            log.info("spotwatch.signal", signal=_signal_name(stop.signum))
        return status
    finally:
        stop.close()
        lock.release()


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


__all__ = ["Path", "build_watcher", "check_directories", "run_daemon"]
