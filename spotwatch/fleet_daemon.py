"""``spotwatch fleet watch`` assembled: real boto3 clients, signals and a scratch
directory around a ``FleetWatcher`` (``spotwatch.fleet_watch``), which takes them
all passed in."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from spotwatch import regions
from spotwatch.errors import UsageError
from spotwatch.fleet_schedule import receivers_for
from spotwatch.fleet_settings import FleetWatchSettings, check_settings, region_from_queue_url
from spotwatch.fleet_tags import InstanceTags, NoTags
from spotwatch.fleet_watch import FleetWatcher
from spotwatch.fleet_wiring import FleetClients, FleetHooks, FleetReporting
from spotwatch.logs import get_logger
from spotwatch.metrics import FleetMetrics


def watch(
    settings: FleetWatchSettings, *, region: str | None = None, metrics_file: Path | None = None
) -> int:
    """``spotwatch fleet watch``: real clients, signals and a scratch directory."""
    check_settings(settings)
    recorder = None
    if metrics_file is not None:  # a bad path is a usage error before any AWS call
        from spotwatch.metrics import MetricsFile, check_path

        recorder = FleetMetrics(MetricsFile(check_path(metrics_file)))
    from spotwatch import hooks, runner
    from spotwatch.stopper import Stopper

    if settings.hooks_dir is not None:
        plan = hooks.plan_hooks(settings.hooks_dir)
        if plan.problem:
            raise UsageError(f"{plan.problem}: {plan.fix}")

    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    # The queue URL names the queue's own region: it beats the environment.
    found = regions.resolve(region or region_from_queue_url(settings.queue_url), os.environ,
                            lambda: session.region_name,
                            lambda: regions.instance_region(os.environ))
    if found is None:
        raise UsageError(regions.no_region("no AWS region for the queue"))
    region = found.name
    # A connection for each receiver's long poll, the book-keeper and every worker
    # (a failed hook's visibility change), so none waits for a free one.
    config = Config(retries={"mode": "standard", "max_attempts": 3},
                    read_timeout=settings.wait_seconds + 15,
                    max_pool_connections=settings.workers + receivers_for(settings.workers) + 3)
    sqs = session.client("sqs", region_name=region, config=config)
    ec2_clients: dict[str, Any] = {}
    ec2_lock = threading.Lock()  # the tag thread and snapshot threads; a session is not thread-safe

    def ec2_for(event_region: str) -> Any:
        with ec2_lock:
            if event_region not in ec2_clients:
                ec2_clients[event_region] = session.client(
                    "ec2", region_name=event_region, config=Config(retries={"mode": "standard"})
                )
            return ec2_clients[event_region]

    if settings.tags:
        # Made before the watcher starts, like the SQS client: EC2's API model takes
        # a few hundred ms of CPU to load, which the first event must not wait for.
        ec2_for(region)


    from spotwatch.hook_env import environ_for_hooks

    environ = environ_for_hooks(os.environ)

    from spotwatch import lifecycle
    from spotwatch.fleet_lifecycle import LifecycleActions

    endpoint = lifecycle.endpoint_url()
    actions = LifecycleActions(
        lambda event_region: lifecycle.make_client(event_region, endpoint=endpoint,
                                                   max_attempts=3),
        heartbeat=settings.lifecycle_heartbeat,
        log=get_logger(),
    )

    stop = Stopper()
    stop.install()
    workdir = Path(tempfile.mkdtemp(prefix="spotwatch-fleet-"))
    try:
        watcher = FleetWatcher(
            settings,
            clients=FleetClients(
                sqs=sqs,
                tags=InstanceTags(ec2_for, warm=[region]) if settings.tags else NoTags(),
                lifecycle=actions,
            ),
            hooks=FleetHooks(
                plan=hooks.plan_hooks, runner=runner.run_hooks, workdir=workdir, environ=environ
            ),
            stop=stop,
            reporting=FleetReporting(metrics=recorder),
        )
        return watcher.run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        stop.close()
