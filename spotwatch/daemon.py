"""Wiring for ``spotwatch run`` (and the drill): real clients, journal, signals, systemd.

Imports only what the idle daemon needs: requests, structlog, tenacity. Never boto3.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from spotwatch.config import RunConfig
from spotwatch.errors import UsageError
from spotwatch.logs import get_logger
from spotwatch.stopper import Stopper
from spotwatch.watcher import (
    HookWork,
    Listener,
    ShutdownLink,
    SignalReport,
    Watcher,
    WatcherLinks,
    WatchSettings,
    WatchSources,
)


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
    from spotwatch.clouds import registry
    from spotwatch.clouds.metadata_http import ImdsError
    from spotwatch.hook_env import environ_for_hooks
    from spotwatch.journal import Journal
    from spotwatch.sdnotify import Notifier

    cloud = decide_cloud(config)
    if not drill:
        from spotwatch.config import check_margin

        check_margin(config, cloud)
    adapter = registry.get(cloud)
    interval = adapter.interval(config.interval, config.interval_given)
    sources = config.sources
    watched = adapter.build(config, interval=interval, stop=stop)
    # The state dir in use, also when given as --state-dir: the built-in actions a
    # hook calls (notify, deregister, replace) keep their marks there.
    environ = {**environ_for_hooks(os.environ), "SPOTWATCH_CLOUD": cloud,
               "SPOTWATCH_STATE_DIR": str(config.state_dir.absolute())}
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
        sources=WatchSources(
            monitors=watched.monitors,
            read_identity=watched.read_identity,
            fault_types=(ImdsError,),
            followups=watched.followups,
            poll_scope=watched.poll_scope,
        ),
        hooks=HookWork(
            plan=hooks.plan_hooks,
            runner=runner.run_hooks,
            hook_environment=hooks.notice_environment,
            journal=journal,
            environ=environ,
            settle_orphan=None if drill else settle_orphan,
            group_record=orphans.group_record,
        ),
        links=WatcherLinks(
            stop=stop,
            notifier=notifier,
            listener=listener,
            signals=signals,
            shutdown=shutdown
            if drill
            else SystemShutdown(
                signals=lambda: stop.signals, cloud=cloud, runs_hooks="shutdown" in sources
            ),
            boot=boot,
        ),
    )


def boot_id_path() -> Path:
    """Where the boot id is read (SPOTWATCH_BOOT_ID_FILE: tests)."""
    from spotwatch.boot import BOOT_ID_PATH

    return Path(os.environ.get("SPOTWATCH_BOOT_ID_FILE") or BOOT_ID_PATH)


def decide_cloud(config: RunConfig) -> str:
    """The cloud to watch, logged once with why. SPOTWATCH_DMI_DIR: tests."""
    from spotwatch.clouds import detect, registry

    dmi_dir = Path(os.environ.get("SPOTWATCH_DMI_DIR") or detect.DMI_DIR)
    decision = detect.decide(config.cloud, config.imds_url, dmi_dir=dmi_dir)
    get_logger().info(
        "cloud.decided", cloud=decision.cloud, how=decision.how, reason=decision.reason
    )
    ignored = [s for s in config.sources if s not in registry.get(decision.cloud).sources]
    if ignored:
        get_logger().warning(
            "cloud.sources_ignored",
            cloud=decision.cloud,
            sources=ignored,
            note=f"not available on {decision.cloud}; see the README's table of sources per cloud",
        )
    return decision.cloud


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
