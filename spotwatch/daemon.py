"""Wiring for ``spotwatch run`` (and the drill): real clients, journal, signals, systemd.

Imports only what the idle daemon needs: requests, structlog, tenacity. Never boto3.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from spotwatch.cloud_sources import interval_for
from spotwatch.config import RunConfig
from spotwatch.errors import UsageError
from spotwatch.logs import get_logger
from spotwatch.stopper import Stopper
from spotwatch.watcher import Listener, Watcher, WatchSettings


def check_directories(config: RunConfig) -> None:
    """Fail fast, with the fix, on a hooks or state directory we cannot use."""
    hooks_dir = config.hooks_dir
    if not hooks_dir.is_dir():
        what = "is not a directory" if hooks_dir.exists() else "does not exist"
        raise UsageError(
            f"hooks directory {hooks_dir} {what}: create it (mkdir -p {hooks_dir}) "
            "or point --hooks-dir / SPOTWATCH_HOOKS_DIR at yours"
        )
    state_dir = config.state_dir
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create state directory {state_dir}: {exc.strerror}; "
            "use --state-dir / SPOTWATCH_STATE_DIR to pick a writable one"
        ) from None
    if not os.access(state_dir, os.W_OK | os.X_OK):
        raise UsageError(
            f"state directory {state_dir} is not writable by uid {os.geteuid()}; "
            "fix its owner or use --state-dir"
        )


def build_watcher(
    config: RunConfig,
    *,
    stop: Stopper,
    drill: bool = False,
    max_notices: int | None = None,
    listener: Listener | None = None,
) -> Watcher:
    from spotwatch import hooks, runner
    from spotwatch.imds import ImdsClient, ImdsError, read_identity
    from spotwatch.journal import Journal
    from spotwatch.monitors import RebalanceMonitor, SpotInterruptionMonitor
    from spotwatch.sdnotify import Notifier

    # One poll (retries included) must fit well inside the interval.
    budget = max(0.5, min(4.0, config.interval * 0.8))
    client = ImdsClient(config.imds_url, budget=budget, stop=stop)
    monitors: list[object] = [SpotInterruptionMonitor(client)]
    if config.on_rebalance:
        monitors.append(RebalanceMonitor(client))
    from spotwatch.install import environ_for_hooks

    # Issue 12: on Google and Azure, their own monitors, identity and follow-ups.
    cloud = decide_cloud(config)
    interval = interval_for(cloud, config.interval, config.interval_given)
    read_identity_now = lambda: read_identity(client)  # noqa: E731
    followups: list[object] = []
    if cloud != "aws":
        from spotwatch import cloud_sources

        sources = cloud_sources.build(
            cloud, config.imds_url, config.sources, interval=interval,
            approve=not config.no_approve, wake=stop.wake,
        )  # fmt: skip
        monitors, read_identity_now = list(sources.monitors), sources.read_identity
        followups = list(sources.followups)
    environ = {**environ_for_hooks(os.environ), "SPOTWATCH_CLOUD": cloud}
    settings = WatchSettings(
        interval=interval,
        hooks_dir=config.hooks_dir,
        hook_timeout=config.hook_timeout,
        deadline_margin=config.deadline_margin,
        drill=drill,
        max_notices=max_notices,
    )
    return Watcher(
        settings,
        monitors=monitors,  # type: ignore[arg-type]
        read_identity=read_identity_now,
        journal=Journal(config.state_dir),
        stop=stop,
        notifier=Notifier(),
        plan=hooks.plan_hooks,
        runner=runner.run_hooks,
        hook_environment=hooks.hook_environment,
        fault_types=(ImdsError,),
        environ=environ,
        listener=listener,
        followups=followups,  # type: ignore[arg-type]
    )


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
    "aws": ("spot", "rebalance", "maintenance", "asg"),
    "gcp": ("spot", "maintenance", "migrate"),
    "azure": ("spot", "maintenance"),
}


def run_daemon(config: RunConfig) -> int:
    """``spotwatch run``: watch until SIGTERM or SIGINT."""
    check_directories(config)
    # Like any daemon, hold no directory busy; hooks run in / and can then be
    # started with posix_spawn (see runner). Paths given relative stay valid.
    config = dataclasses.replace(
        config, hooks_dir=config.hooks_dir.absolute(), state_dir=config.state_dir.absolute()
    )
    os.chdir("/")
    log = get_logger()
    stop = Stopper()
    stop.install()
    try:
        watcher = build_watcher(config, stop=stop)
        log.info(
            "spotwatch.started",
            pid=os.getpid(),
            imds_url=config.imds_url,
            state_dir=str(config.state_dir),
            hook_timeout=config.hook_timeout,
            deadline_margin=config.deadline_margin,
            on_rebalance=config.on_rebalance,
            interval=watcher.settings.interval,
        )
        status = watcher.run()
        if stop.signum is not None:
            log.info("spotwatch.signal", signal=_signal_name(stop.signum))
        return status
    finally:
        stop.close()


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


__all__ = ["Path", "build_watcher", "check_directories", "run_daemon"]
