"""``spotwatch drill --with-examples``: the shipped action examples rehearsed against
stand-ins, all on 127.0.0.1.

moto's server stands in for AWS (an Auto Scaling group whose instance is in a target
group with a 3 s deregistration delay, an S3 bucket, the instance to tag), a local
HTTP receiver for the webhook, and recording scripts first on PATH for kubectl,
nomad, scontrol/squeue, aws (ECS), docker and systemctl. The drill's IMDS simulator
names the group's instance, and the real watcher runs copies of the shipped hooks:
deregister, every drain and stop, ship and notify (the opt-in replace is left out).
The stand-ins' command lines and what AWS and the receiver got are added to the
timeline. Needs moto's server (``pip install 'moto[server]'``, in spotwatch's test extras).
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from spotwatch import shipped
from spotwatch.drill import DrillOptions, DrillReport, run_drill
from spotwatch.errors import SpotwatchError

HOOKS = (
    "hooks.d/examples/20-deregister.sh",
    "hooks.d/examples/30-drain-ecs.sh",
    "hooks.d/examples/30-drain-kubernetes.sh",
    "hooks.d/examples/30-drain-nomad.sh",
    "hooks.d/examples/30-drain-slurm.sh",
    "hooks.d/examples/40-stop-docker.sh",
    "hooks.d/examples/40-stop-service.sh",
    "hooks.d/50-ship-logs.sh",
    "hooks.d/90-notify-webhook.sh",
)
RESUME_HOOKS = tuple(
    f"resume.d/examples/{name}" for name in (
        "20-register.sh", "30-activate-ecs.sh", "30-uncordon-kubernetes.sh",
        "30-undrain-nomad.sh", "30-resume-slurm.sh", "40-start-docker.sh",
        "40-start-service.sh",
    )
)  # fmt: skip
NODE = "rehearsal-node"
CLUSTER = "rehearsal"
SERVICE = "app.service"
BUCKET = "spotwatch-rehearsal"
DELAY = 3  # the target group's deregistration delay, seconds

# Each stand-in records its command line (with the time) and answers as the tool would.
STANDIN = """#!/bin/bash
{{ printf '%s %s' "$(date +%s.%N)" "${{0##*/}}"; printf ' %q' "$@"; echo; }} \\
    >>"$SPOTWATCH_STANDIN_LOG"
case "$*" in
{cases}
esac
"""
ANSWERS = {
    "kubectl": """cordon*) echo "node/$2 cordoned" ;;
drain*) echo "node/$2 drained" ;;
uncordon*) echo "node/$2 uncordoned" ;;""",
    "nomad": """*-enable*) sleep 1; echo "All allocations on node have stopped" ;;
*-disable*) echo "Node drain strategy unset" ;;""",
    "scontrol": f"""show*) echo "NodeName={NODE} State=IDLE+DRAIN Reason=spotwatch: drill" ;;""",
    "squeue": """*) printf '4242 2:00:00\\n4243 0:20\\n' ;;""",
    "aws": f"""*list-container-instances*) echo "arn:aws:ecs:us-east-1:123456789012:container-instance/{CLUSTER}/0abc" ;;
*describe-container-instances*) echo 0 ;;""",  # noqa: E501
    "docker": """ps*) printf 'c0ffee000001\\nc0ffee000002\\n' ;;
stop*) shift 3; printf '%s\\n' "$@" ;;
start*) shift; printf '%s\\n' "$@" ;;""",
    "systemctl": """is-active*) exit 3 ;;""",
}


@dataclass(frozen=True)
class Call:
    at: float  # seconds since the drill began
    line: str


@dataclass(frozen=True)
class Seen:
    """What the stand-ins saw."""

    instance_id: str
    target_group: str
    calls: tuple[Call, ...]
    targets_left: int  # registered in the target group after the hooks (and the way back)
    objects: tuple[str, ...]  # S3 keys shipped
    tags: tuple[str, ...]  # the instance's spotwatch:* tags
    messages: tuple[str, ...]  # webhook summaries


def parse_calls(text: str, began_at: float) -> tuple[Call, ...]:
    """The stand-ins' log, as calls in seconds since ``began_at`` (pure)."""
    calls = []
    for line in text.splitlines():
        stamp, _, rest = line.partition(" ")
        try:
            calls.append(Call(float(stamp) - began_at, rest))
        except ValueError:
            continue
    return tuple(calls)


def render_seen(seen: Seen, report: DrillReport) -> str:
    lines = [
        "",
        f"stand-ins (all on 127.0.0.1): AWS = moto (instance {seen.instance_id}, "
        f"target group delay {DELAY} s), webhook receiver, recording CLIs",
    ]
    lines += [f"+{c.at:6.2f}s  $ {c.line}" for c in seen.calls]
    when = "after the way back" if report.resume_requested else "at the end"
    lines.append(f"{'':8}  target group: {seen.targets_left} target(s) registered {when}")
    lines.append(f"{'':8}  S3 s3://{BUCKET}: {len(seen.objects)} object(s): "
                 + ", ".join(seen.objects))  # fmt: skip
    lines.append(f"{'':8}  EC2 tag: {', '.join(seen.tags) or 'none'}")
    for message in seen.messages:
        lines.append(f"{'':8}  webhook: {message}")
    return "\n".join(lines)


def rehearse(options: DrillOptions) -> tuple[DrillReport, Seen]:
    """Run the drill of ``options`` with the shipped examples against the stand-ins
    (its hooks_dir and resume_dir are replaced by staged copies)."""
    try:
        # Imported by name: moto is no dependency of spotwatch, and mypy need not read it.
        moto_server: Any = importlib.import_module("moto.server")
    except ImportError:
        raise SpotwatchError(
            "drill --with-examples needs moto's server as the stand-in for AWS: "
            "pip install 'moto[server]' (it is in spotwatch's test extras)",
            exit_code=2,
        ) from None
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    with tempfile.TemporaryDirectory(prefix="spotwatch-rehearsal-") as tmp:
        work = Path(tmp)
        hooks = _stage(work / "hooks.d", HOOKS)
        resume = _stage(work / "resume.d", RESUME_HOOKS)
        bin_dir = work / "bin"
        bin_dir.mkdir()
        for tool, cases in ANSWERS.items():
            path = bin_dir / tool
            path.write_text(STANDIN.format(cases=cases))
            path.chmod(0o755)
        logs = work / "app"
        logs.mkdir()
        (logs / "app.log").write_text("request served\n" * 2000)
        (logs / "error.log").write_text("nothing wrong\n")
        calls_log = work / "calls.log"
        calls_log.touch()

        moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        receiver = _Receiver()
        try:
            port = moto._server.server_port
            aws = {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            }  # fmt: skip
            with _environ(aws):
                instance, target_group = _world()
            env = {
                **aws,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
                "SPOTWATCH_STANDIN_LOG": str(calls_log),
                "SPOTWATCH_S3_BUCKET": BUCKET, "SPOTWATCH_SHIP_PATHS": str(logs),
                # Its one-line summary on the timeline, not a JSON line per file.
                "SPOTWATCH_SHIP_ARGS": "--log-level warning",
                "SPOTWATCH_NOTIFY_WEBHOOK_URL": f"{receiver.url}/ops",
                "SPOTWATCH_NOTIFY_TAG": "true", "SPOTWATCH_ECS_CLUSTER": CLUSTER,
                "SPOTWATCH_K8S_NODE": NODE, "SPOTWATCH_SLURM_NODE": NODE,
                "SPOTWATCH_STOP_SERVICE": SERVICE,
            }  # fmt: skip
            identity = (("instanceId", instance), ("region", "us-east-1"))
            drill = replace(options, hooks_dir=hooks, resume_dir=resume, identity=identity)
            with _draining(), _environ(env):
                report = run_drill(drill)
                seen = _seen(instance, target_group, calls_log, report, receiver)
        finally:
            receiver.close()
            moto.stop()
    return report, seen


def _stage(directory: Path, names: tuple[str, ...]) -> Path:
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)  # whatever the umask: spotwatch refuses a writable one
    for name in names:
        path = directory / name.rsplit("/", 1)[1]
        path.write_bytes(shipped.read(name))
        path.chmod(0o755)
    return directory


@contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in os.environ for the block: the watcher hands os.environ to the hooks."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _world() -> tuple[str, str]:
    """An Auto Scaling group of one instance in a target group, and a bucket."""
    import boto3

    ec2: Any = boto3.client("ec2")
    elbv2: Any = boto3.client("elbv2")
    autoscaling: Any = boto3.client("autoscaling")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]  # fmt: skip
    group = elbv2.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc,
                                      TargetType="instance")["TargetGroups"][0]  # fmt: skip
    arn = group["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": str(DELAY)}])  # fmt: skip
    image = ec2.describe_images()["Images"][0]["ImageId"]
    template = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
        "ImageId": image, "InstanceType": "m5.large"})["LaunchTemplate"]["LaunchTemplateId"]  # fmt: skip  # noqa: E501
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web", MinSize=1, MaxSize=2, DesiredCapacity=1,
        LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
        VPCZoneIdentifier=subnet, TargetGroupARNs=[arn],
    )  # fmt: skip
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])
    instance = str(found["AutoScalingGroups"][0]["Instances"][0]["InstanceId"])
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return instance, str(arn)


@contextmanager
def _draining() -> Iterator[None]:
    """moto deregisters a target at once; ELB drains it for the group's delay first."""
    FakeTargetGroup: Any = importlib.import_module("moto.elbv2.models").FakeTargetGroup
    original = FakeTargetGroup.deregister

    def deregister(self: Any, targets: list[dict[str, Any]]) -> None:
        delay = float(self.attributes.get("deregistration_delay.timeout_seconds", 300))
        for target in targets:
            found = self.targets.pop(target["Id"], None)
            if found is None:
                original(self, [target])
                continue
            self.terminated_targets[target["Id"]] = found

            def drained(target_id: str = target["Id"], t: Any = found) -> None:
                self.terminated_targets.pop(target_id, None)
                self.deregistered_targets[target_id] = t

            timer = threading.Timer(delay, drained)
            timer.daemon = True
            timer.start()

    FakeTargetGroup.deregister = deregister
    try:
        yield
    finally:
        FakeTargetGroup.deregister = original


def _seen(instance: str, target_group: str, calls_log: Path, report: DrillReport,
          receiver: _Receiver) -> Seen:  # fmt: skip
    import boto3

    health = boto3.client("elbv2").describe_target_health(TargetGroupArn=target_group)
    registered = [d for d in health["TargetHealthDescriptions"]
                  if d["TargetHealth"].get("State") != "draining"]  # fmt: skip
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET).get("Contents", [])
    tags = boto3.client("ec2").describe_tags(
        Filters=[{"Name": "resource-id", "Values": [instance]}])["Tags"]  # fmt: skip
    return Seen(
        instance_id=instance,
        target_group=target_group,
        calls=parse_calls(calls_log.read_text(), report.began_at),
        targets_left=len(registered),
        objects=tuple(str(o["Key"]) for o in listed),
        tags=tuple(f"{t['Key']}={t['Value']}" for t in tags if t["Key"].startswith("spotwatch")),
        messages=tuple(str(m.get("summary", m)) for m in receiver.messages),
    )


class _Receiver:
    """The webhook's receiving end: keeps each JSON message."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        messages = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    messages.append(json.loads(body))
                except ValueError:
                    messages.append({"summary": body.decode("utf-8", "replace")})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

