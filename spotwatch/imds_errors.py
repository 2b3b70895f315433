"""The faults of a metadata request: ``ImdsError`` with a stable ``kind``, and advice.

Apart from the IMDS client so that the plain HTTP client (``cloudhttp``) and
the clients of every cloud share them without importing each other.
"""

from __future__ import annotations

# After falling back to IMDSv1, try for a token again this often.
V2_RETRY_SECONDS = 300.0

ADVICE_UNREACHABLE = (
    "check --imds-url / SPOTWATCH_IMDS_URL and that no firewall or network namespace "
    "blocks it; spotwatch keeps polling"
)
ADVICE_TIMEOUT = (
    "IMDS did not answer in time; in a container, answers can be dropped by the hop limit "
    "(aws ec2 modify-instance-metadata-options --instance-id ID "
    "--http-put-response-hop-limit 2); spotwatch keeps polling"
)
ADVICE_DROPPED = "the connection to IMDS was cut; usually transient, spotwatch keeps polling"
ADVICE_SERVER = "IMDS answered with a server error; usually transient, spotwatch keeps polling"
ADVICE_THROTTLED = (
    "IMDS is throttling this instance: other processes query it too often; "
    "have them cache their answers. spotwatch keeps polling"
)
ADVICE_UNAUTHORIZED = (
    "IMDS requires IMDSv2 tokens but none could be used: check that PUT /latest/api/token "
    "works from here (in a container, raise the hop limit: aws ec2 "
    "modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2)"
)
ADVICE_REDIRECT = (
    "something between spotwatch and IMDS redirects requests; check --imds-url and any "
    "proxy or iptables rule in the way (redirects are never followed)"
)
ADVICE_TOO_LARGE = "the answer is far larger than any IMDS answer; check --imds-url"
ADVICE_BAD_STATUS = "unexpected answer from IMDS; check that --imds-url points at IMDS"
ADVICE_FORBIDDEN = (
    "IMDS refused the request; check that IMDS is enabled for this instance "
    "(aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled)"
)
ADVICE_BAD_BODY = "IMDS sent a malformed answer; check --imds-url"
ADVICE_TOKEN_MISSING = (
    "IMDSv2 tokens are unavailable, so spotwatch uses IMDSv1 and tries tokens again every "
    f"{V2_RETRY_SECONDS:g} s; if the instance requires IMDSv2 in a container, raise the hop "
    "limit (aws ec2 modify-instance-metadata-options --instance-id ID "
    "--http-put-response-hop-limit 2)"
)

ERROR_KINDS = (
    "unreachable",
    "timeout",
    "dropped",
    "server-error",
    "throttled",
    "unauthorized",
    "redirect",
    "too-large",
    "bad-status",
    "bad-body",
)
_RETRYABLE_KINDS = frozenset({"unreachable", "timeout", "dropped", "server-error", "throttled"})


def advice_unreachable(base_url: str) -> str:
    """What to check when nothing answers at ``base_url`` (the URL in use, named)."""
    return (
        "check that this runs on EC2 and that IMDS is enabled "
        "(aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled), "
        f"and that no firewall or network namespace blocks {base_url} "
        "(--imds-url / SPOTWATCH_IMDS_URL); spotwatch keeps polling"
    )


class ImdsError(Exception):
    """IMDS could not give an answer. ``kind`` is a stable code (see ERROR_KINDS)."""

    def __init__(self, kind: str, detail: str, advice: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.advice = advice

    @property
    def retryable(self) -> bool:
        """True for faults that may go away on their own (worth another try)."""
        return self.kind in _RETRYABLE_KINDS

    def __str__(self) -> str:
        return f"IMDS {self.kind}: {self.detail}"
