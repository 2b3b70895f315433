"""`spotwatch status` errors and start-up: one line, the right exit status, no traceback.

API faults come from a small fake EC2 endpoint on 127.0.0.1 that answers every
call with one canned EC2 error, so boto3's real retry logic runs over HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spotwatch.cli import main
from tests.helpers import free_port


class FakeEc2:
    """An EC2 endpoint that answers every call with the same error; counts calls."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.calls = 0
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{message}</Message>"
            "</Error></Errors><RequestID>fake-request-id</RequestID></Response>"
        ).encode()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.calls += 1
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeEc2:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """No AWS settings at all from this machine: no profile, files, retry overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    })
    return env


@pytest.fixture
def creds_env(clean_env: dict[str, str]) -> dict[str, str]:
    return {**clean_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spotwatch", "status", *args], env=env,
                          capture_output=True, text=True, timeout=90)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("spotwatch status: error: ")
    return lines[0]


@pytest.mark.slow
def test_no_credentials(clean_env: dict[str, str]) -> None:
    with FakeEc2(500, "InternalError", "never asked") as ec2:
        env = {**clean_env, "AWS_ENDPOINT_URL": ec2.url, "AWS_DEFAULT_REGION": "us-east-1"}
        done = status(env)
    assert done.returncode == 3
    assert one_line(done) == ("spotwatch status: error: no AWS credentials found: "
                              "set AWS_PROFILE or run aws configure")
    assert done.stdout == ""
    assert ec2.calls == 0


@pytest.mark.slow
def test_access_denied_names_the_missing_permission(creds_env: dict[str, str]) -> None:
    with FakeEc2(403, "UnauthorizedOperation",
                 "You are not authorized to perform this operation.") as ec2:
        done = status({**creds_env, "AWS_ENDPOINT_URL": ec2.url})
    assert done.returncode == 3
    assert one_line(done) == (
        "spotwatch status: error: access denied: the caller lacks permission "
        "ec2:DescribeSpotInstanceRequests in us-east-1 (UnauthorizedOperation)")
    assert ec2.calls == 1  # not retried


@pytest.mark.slow
def test_throttling_is_retried_a_bounded_number_of_times(creds_env: dict[str, str]) -> None:
    with FakeEc2(503, "RequestLimitExceeded", "Request limit exceeded.") as ec2:
        done = status({**creds_env, "AWS_ENDPOINT_URL": ec2.url}, "--tag", "team=batch")
    assert done.returncode == 3
    assert "EC2 throttled DescribeSpotInstanceRequests in us-east-1 even after retries " \
           "(RequestLimitExceeded)" in one_line(done)
    assert ec2.calls == 3  # boto3's standard retry mode: three attempts, with backoff


@pytest.mark.slow
def test_an_id_ec2_does_not_know(creds_env: dict[str, str]) -> None:
    with FakeEc2(400, "InvalidSpotInstanceRequestID.NotFound",
                 "The spot instance request ID 'sir-0badc0de' does not exist") as ec2:
        done = status({**creds_env, "AWS_ENDPOINT_URL": ec2.url}, "sir-0badc0de")
    assert done.returncode == 3
    assert "sir-0badc0de" in one_line(done)


@pytest.mark.slow
def test_an_endpoint_that_cannot_be_reached(creds_env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = status({**creds_env, "AWS_ENDPOINT_URL": url})
    assert done.returncode == 3
    assert one_line(done).startswith(
        "spotwatch status: error: could not reach EC2 in us-east-1: ")


@pytest.mark.slow
def test_no_region(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    done = status(env)
    assert done.returncode == 3
    assert "no AWS region: pass --region" in one_line(done)


@pytest.mark.parametrize(("args", "expected"), [
    (["i-xyz"], "'i-xyz' is neither an instance id"),
    (["i-0123456789abcdef"], "is neither an instance id"),  # 16 hex digits: neither 8 nor 17
    (["sir-"], "'sir-' is neither"),
    (["--region", "US_EAST"], "'US_EAST' is not a region name like us-east-1"),
    (["--watch", "0.5"], "poll at most once a second"),
    (["--watch", "soon"], "'soon' is not a number of seconds"),
    (["--tag", "=x"], "is not KEY=VALUE"),
    (["--state", "sleeping"], "invalid choice: 'sleeping'"),
])
def test_bad_usage_is_one_line_and_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("spotwatch status: error: ")
    assert expected in err


def test_region_and_all_regions_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--region", "us-east-1", "--all-regions"]) == 2
    assert capsys.readouterr().err == (
        "spotwatch status: error: --region and --all-regions do not mix: pass one of them\n")


def test_help_and_the_pure_modules_do_not_import_boto3() -> None:
    script = (
        "import sys\n"
        "import spotwatch.spot_codes, spotwatch.status_view, spotwatch.status\n"
        "from spotwatch.cli import main\n"
        "try:\n"
        "    main(['status', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"
    assert "exit status:" in done.stdout
