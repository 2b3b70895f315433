"""``spotwatch sim``: the simulators as a subcommand, the same options as
``python -m spotwatch.imdssim``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import requests

from spotwatch.cli import main
from spotwatch.imdssim import INSTANCE_ACTION_PATH, ImdsSimulator, format_time
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow


def notice_served(cloud: str, url: str) -> bool:
    if cloud == "gcp":
        resp = requests.get(url + "/computeMetadata/v1/instance/preempted",
                            headers={"Metadata-Flavor": "Google"}, timeout=5)  # fmt: skip
        return resp.text == "TRUE"
    if cloud == "azure":
        resp = requests.get(url + "/metadata/scheduledevents?api-version=2020-07-01",
                            headers={"Metadata": "true"}, timeout=5)  # fmt: skip
        return [e["EventType"] for e in resp.json()["Events"]] == ["Preempt"]
    if cloud == "alibaba":
        token = requests.put(url + "/latest/api/token", timeout=5,
                             headers={"X-aliyun-ecs-metadata-token-ttl-seconds": "60"}).text
        resp = requests.get(url + "/latest/meta-data/instance/spot/termination-time",
                            headers={"X-aliyun-ecs-metadata-token": token}, timeout=5)  # fmt: skip
        return resp.status_code == 200 and resp.text > format_time(time.time() + 60)
    if cloud == "tencent":
        resp = requests.get(url + "/latest/meta-data/spot/termination-time", timeout=5)
        # UTC+8: eight hours ahead of the UTC time 90 s from now.
        return resp.status_code == 200 and resp.text > format_time(
            time.time() + 8 * 3600 + 60
        ).replace("T", " ").rstrip("Z")
    token = requests.put(url + "/latest/api/token", timeout=5,
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).text
    resp = requests.get(url + INSTANCE_ACTION_PATH, timeout=5,
                        headers={"X-aws-ec2-metadata-token": token})
    if resp.status_code != 200:
        return False
    body = resp.json()
    return bool(body["action"] == "stop" and body["time"] > format_time(time.time() + 60))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure", "alibaba", "tencent"])
def test_spotwatch_sim_serves_a_notice_and_stops_on_sigterm(cloud: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotwatch", "sim", "--cloud", cloud, "--port", str(port),
         "--notice-in", "0", "--action", "stop", "--lead", "90", "--require-token"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        wait_until(lambda: notice_served(cloud, url), 10, f"the {cloud} notice")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with ImdsSimulator() as sim:
        port = sim.port
        assert main(["sim", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"spotwatch sim: error: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


def test_both_front_ends_take_the_same_options() -> None:
    def options(argv: list[str]) -> set[str]:
        text = subprocess.run([sys.executable, *argv, "--help"], capture_output=True,
                              text=True, timeout=30, check=True).stdout
        return {word.strip("[],") for word in text.split() if word.startswith(("--", "[--"))}

    ours = options(["-m", "spotwatch", "sim"])
    assert {"--cloud", "--notice-in", "--lead", "--port", "--require-token"} <= ours
    assert ours == options(["-m", "spotwatch.imdssim"])
