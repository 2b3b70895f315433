"""``spotwatch notify``: one message per end of the instance, to every destination set.

Pure parts first: the record (every notice field, ``record``), the one-line
summary, the template (a JSON document whose strings may hold ``{{field}}``;
it is parsed, filled in and serialised again, so the result is valid JSON
whatever the values hold) and each destination's message. Then the edges:
``send_all`` tries every destination on a thread of its own, again and again
within the deadline, and marks each one sent in the state directory
(``marks.Marks``) so a restart of the hook never sends it twice.

Webhooks go through ``requests``, which honours HTTP(S)_PROXY and NO_PROXY;
SNS, EventBridge and the EC2 tag through boto3 (imported on first use, never by
``spotwatch run``), whose metadata credential requests are kept off any proxy.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from spotwatch.clocks import SYSTEM, Clocks
from spotwatch.errors import UsageError, aws_error_text
from spotwatch.hook_context import REBALANCE, SHUTDOWN, HookContext, known_region
from spotwatch.logs import utc_timestamp
from spotwatch.marks import Marks, MarksError

WEBHOOK = "webhook"
SLACK = "slack"
SNS = "sns"
EVENTBRIDGE = "eventbridge"
TAG = "tag"
KINDS = (WEBHOOK, SLACK, SNS, EVENTBRIDGE, TAG)

EVENT_SOURCE = "spotwatch"
DETAIL_TYPE = "spotwatch Instance Ending"
TAG_KEY = "spotwatch:ending"
ATTEMPT_TIMEOUT = 10.0  # longest one attempt may take, seconds (less near the deadline)
RETRY_FIRST, RETRY_MAX = 0.5, 5.0

# The template's fields, in the order the documentation lists them.
FIELDS = (
    "source", "message_id", "summary", "event", "action", "phase", "notice_time",
    "notice_id", "deadline", "deadline_utc", "seconds_left", "instance_id",
    "instance_type", "region", "availability_zone", "cloud", "asg_name", "hostname",
    "drill", "sent_at",
)  # fmt: skip
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


@dataclass(frozen=True)
class Destination:
    """Where one message goes. ``label`` is safe to print (a URL's secret path is not)."""

    kind: str
    target: str

    @property
    def label(self) -> str:
        if self.kind in (WEBHOOK, SLACK):
            parts = urlsplit(self.target)
            return f"{self.kind} {parts.scheme}://{parts.hostname or '?'}"
        if self.kind == TAG:
            return "EC2 tag on the instance"
        return f"{self.kind} {self.target}"

    @property
    def key(self) -> str:
        """Stable per destination, without the secret: a digest of the target."""
        return f"{self.kind}:{hashlib.sha256(self.target.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Settings:
    destinations: tuple[Destination, ...]
    template: Any = None  # parsed JSON, or None for the plain record
    headers: tuple[tuple[str, str], ...] = ()
    on_rebalance: bool = False
    attempt_timeout: float = ATTEMPT_TIMEOUT


@dataclass
class Outcome:
    destination: Destination
    status: str = "failed"  # "sent", "already sent", "failed"
    attempts: int = 0
    error: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        if self.status == "sent":
            tries = f" (attempt {self.attempts})" if self.attempts > 1 else ""
            return f"notify: {self.destination.label}: sent{tries}"
        if self.status == "already sent":
            return f"notify: {self.destination.label}: already sent for this notice; not again"
        return (
            f"notify: {self.destination.label}: not sent after {self.attempts} "
            f"attempt(s): {self.error}"
        )


# -- pure ------------------------------------------------------------------------------


def parse_destination(kind: str, target: str) -> Destination:
    """A destination from a flag or setting; a one-line usage error when malformed."""
    target = target.strip()
    if kind in (WEBHOOK, SLACK):
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"the {kind} URL must be http:// or https://, not {target[:40]!r}")
    elif kind == SNS:
        if not re.fullmatch(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+", target):
            raise UsageError(f"--sns-topic takes a topic ARN (arn:aws:sns:...), not {target!r}")
    elif kind == EVENTBRIDGE and not re.fullmatch(r"[A-Za-z0-9/._:-]{1,1600}", target):
        raise UsageError(f"--event-bus takes an event bus name or ARN, not {target!r}")
    return Destination(kind, target)


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
        raise UsageError(f"a header is 'Name: value', not {text[:60]!r}")
    if any(ch in value for ch in "\r\n"):
        raise UsageError(f"header {name} has a line break in its value")
    return name, value.strip()


def headers_from_settings(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """SPOTWATCH_NOTIFY_HEADER_X_API_KEY=v is the header ``X-Api-Key: v``."""
    prefix = "SPOTWATCH_NOTIFY_HEADER_"
    out = []
    for name, value in sorted(environ.items()):
        if name.startswith(prefix) and name != prefix:
            words = name[len(prefix) :].split("_")
            out.append(parse_header(f"{'-'.join(w.capitalize() for w in words)}: {value}"))
    return out


def parse_template(text: str, where: str) -> Any:
    try:
        template = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the template {where} is not JSON: {exc}") from None
    unknown = sorted(set(_placeholders(template)) - set(FIELDS))
    if unknown:
        raise UsageError(
            f"the template {where} names unknown field(s) {', '.join(unknown)}: "
            f"fields are {', '.join(FIELDS)}"
        )
    return template


def _placeholders(node: Any) -> list[str]:
    if isinstance(node, str):
        return _PLACEHOLDER.findall(node)
    if isinstance(node, list):
        return [name for item in node for name in _placeholders(item)]
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in _placeholders(k) + _placeholders(v)]
    return []


def seconds_left(context: HookContext, now: float, environ: Mapping[str, str]) -> int | None:
    given = environ.get("SPOTWATCH_SECONDS_LEFT", "").strip()
    try:
        return int(float(given))
    except ValueError:
        pass
    return None if context.deadline is None else max(0, int(context.deadline - now))


def summary(context: HookContext, left: int | None) -> str:
    """One line for people (Slack, the SNS subject, the log)."""
    who = f"{context.instance_id} ({context.instance_type}, {context.availability_zone})"
    if context.resuming:
        text = f"resume on {who}: running again after {context.event}"
        if context.action:
            text += f" ({context.action})"
    elif context.event == SHUTDOWN:
        text = f"shutdown on {who}: shutting down ({context.shutdown or 'unknown'}), no notice"
        if left is not None:
            text += f", {left} s left"
    else:
        text = f"{context.event} on {who}: {context.action or '?'} at {context.notice_time or '?'}"
        if left is not None:
            text += f", {left} s left"
    return f"[drill] {text}" if context.drill else text


def record(
    context: HookContext, *, now: float, left: int | None, hostname: str, message_id: str
) -> dict[str, Any]:
    """Every notice field, by the names the template uses."""
    return {
        "source": EVENT_SOURCE,
        "message_id": message_id,
        "summary": summary(context, left),
        "event": context.event,
        "action": context.action,
        "phase": "resume" if context.resuming else "notice",
        "notice_time": context.notice_time,
        "notice_id": context.notice_id,
        "deadline": None if context.deadline is None else int(context.deadline),
        "deadline_utc": "" if context.deadline is None else utc_timestamp(context.deadline),
        "seconds_left": left,
        "instance_id": context.instance_id,
        "instance_type": context.instance_type,
        "region": context.region,
        "availability_zone": context.availability_zone,
        "cloud": context.cloud,
        "asg_name": context.asg_name,
        "hostname": hostname,
        "drill": context.drill,
        "sent_at": utc_timestamp(now),
    }


def render(template: Any, values: Mapping[str, Any]) -> Any:
    """``template`` with its ``{{field}}`` placeholders filled in. A string that is
    one placeholder alone takes the value as it is (a number stays a number);
    anywhere else the value's text is spliced into the string."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return values.get(whole.group(1))

        def text(match: re.Match[str]) -> str:
            value = values.get(match.group(1))
            if value is None:
                return ""
            if isinstance(value, bool):
                return "true" if value else "false"
            return str(value)

        return _PLACEHOLDER.sub(text, template)
    if isinstance(template, list):
        return [render(item, values) for item in template]
    if isinstance(template, dict):
        return {render(k, values): render(v, values) for k, v in template.items()}
    return template


def tag_value(context: HookContext, values: Mapping[str, Any]) -> str:
    """``<event>@<time>``: the notice's time, else the deadline's, else when sent."""
    when = context.notice_time or values.get("deadline_utc") or values["sent_at"]
    event = f"{context.event}+resume" if context.resuming else context.event
    return f"{event}@{when}"[:256]


def sns_subject(text: str) -> str:
    """SNS subjects: ASCII, no line breaks, at most 100 characters."""
    ascii_text = text.encode("ascii", "replace").decode()
    flat = " ".join(ascii_text.split())
    return flat[:100] or "spotwatch"


def skip_reason(context: HookContext, settings: Settings) -> str:
    """Why nothing is sent for this run at all, or ''."""
    if not settings.destinations:
        return (
            "no destination set (SPOTWATCH_NOTIFY_WEBHOOK_URL, SPOTWATCH_WEBHOOK_URL, "
            "SPOTWATCH_NOTIFY_SNS_TOPIC, SPOTWATCH_NOTIFY_EVENT_BUS, SPOTWATCH_NOTIFY_TAG); "
            "nothing sent"
        )
    if context.event == REBALANCE and not settings.on_rebalance and not context.resuming:
        return (
            "a rebalance recommendation is a warning, not an end of the instance; "
            "nothing sent (pass --on-rebalance to send one)"
        )
    return ""


# -- the edges -----------------------------------------------------------------------


class Failure(Exception):
    """One attempt failed; ``retry`` False when another attempt cannot help."""

    def __init__(self, text: str, retry: bool = True) -> None:
        super().__init__(text)
        self.retry = retry


class Senders:
    """The I/O of each kind of destination; one instance per run (clients are cached)."""

    def __init__(self, context: HookContext, settings: Settings) -> None:
        self.context = context
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._http: Any = None

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3.session
                from botocore.config import Config

                config = Config(
                    connect_timeout=5,
                    read_timeout=self.settings.attempt_timeout,
                    retries={"total_max_attempts": 1},
                )
                self._clients[service] = boto3.session.Session().client(
                    service, region_name=known_region(self.context), config=config
                )
            return self._clients[service]

    def send(self, destination: Destination, values: Mapping[str, Any], timeout: float) -> Any:
        kind = destination.kind
        if kind in (WEBHOOK, SLACK):
            if kind == SLACK:
                body: Any = {"text": values["summary"]}
            elif self.settings.template is not None:
                body = render(self.settings.template, values)
            else:
                body = dict(values)
            return self._post(destination.target, body, timeout)
        return self._aws(destination, values)

    def _post(self, url: str, body: Any, timeout: float) -> dict[str, Any]:
        import requests

        if self._http is None:
            self._http = requests.Session()
        headers = {"Content-Type": "application/json", "User-Agent": "spotwatch-notify"}
        headers.update(dict(self.settings.headers))
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            answer = self._http.post(
                url, data=data, headers=headers, timeout=(min(timeout, 5.0), timeout),
                allow_redirects=False,
            )  # fmt: skip
        except requests.RequestException as exc:
            raise Failure(_request_error(exc)) from None
        status = answer.status_code
        answer.close()
        if 200 <= status < 300:
            return {"status": status}
        retry = status >= 500 or status in (408, 425, 429)
        raise Failure(f"HTTP {status}", retry=retry)

    def _aws(self, destination: Destination, values: Mapping[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if destination.kind == SNS:
                return self._sns(destination.target, values)
            if destination.kind == EVENTBRIDGE:
                return self._eventbridge(destination.target, values)
            return self._tag(values)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            retry = status >= 500 or status == 0 or "Throttl" in code or code in (
                "RequestLimitExceeded", "TooManyRequestsException", "InternalError",
            )  # fmt: skip
            raise Failure(_with_iam_hint(aws_error_text(exc), destination), retry) from None
        except BotoCoreError as exc:
            raise Failure(aws_error_text(exc)) from None

    def _sns(self, topic: str, values: Mapping[str, Any]) -> dict[str, Any]:
        body = (
            render(self.settings.template, values)
            if self.settings.template is not None
            else dict(values)
        )
        kwargs: dict[str, Any] = {
            "TopicArn": topic,
            "Subject": sns_subject(str(values["summary"])),
            "Message": json.dumps(body, ensure_ascii=False),
        }
        if topic.endswith(".fifo"):
            # A FIFO topic drops a repeat of the same id itself (for five minutes).
            kwargs["MessageGroupId"] = str(values["instance_id"])[:128]
            kwargs["MessageDeduplicationId"] = str(values["message_id"])[:128]
        answer = self.client("sns").publish(**kwargs)
        return {"message_id": answer.get("MessageId", "")}

    def _eventbridge(self, bus: str, values: Mapping[str, Any]) -> dict[str, Any]:
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(dict(values), ensure_ascii=False),
            "EventBusName": bus,
        }
        answer = self.client("events").put_events(Entries=[entry])
        if answer.get("FailedEntryCount"):
            failed = (answer.get("Entries") or [{}])[0]
            code = failed.get("ErrorCode", "")
            text = f"{code}: {failed.get('ErrorMessage', '')}".strip(": ")
            raise Failure(text or "the event was not accepted", retry="Throttl" in code)
        return {"event_id": (answer.get("Entries") or [{}])[0].get("EventId", "")}

    def _tag(self, values: Mapping[str, Any]) -> dict[str, Any]:
        instance = self.context.instance_id
        if not instance.startswith("i-"):
            raise Failure(f"no EC2 instance id to tag (SPOTWATCH_INSTANCE_ID={instance})", False)
        value = tag_value(self.context, values)
        self.client("ec2").create_tags(
            Resources=[instance], Tags=[{"Key": TAG_KEY, "Value": value}]
        )
        return {"tag": f"{TAG_KEY}={value}"}


_IAM = {SNS: "sns:Publish", EVENTBRIDGE: "events:PutEvents", TAG: "ec2:CreateTags"}


def _with_iam_hint(text: str, destination: Destination) -> str:
    if ("AccessDenied" in text or "Unauthorized" in text) and destination.kind in _IAM:
        return f"{text} (the instance role needs {_IAM[destination.kind]})"
    return text


def _request_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    # requests repeats the URL (a webhook's secret) in its messages: keep the type only.
    if "://" in text:
        return name
    return f"{name}: {text}"[:200]


def send_all(
    context: HookContext,
    settings: Settings,
    values: Mapping[str, Any],
    *,
    act_by: float,
    marks: Marks | None,
    senders: Any,
    clocks: Clocks = SYSTEM,
    warn: Callable[[str], None] = lambda text: None,
) -> list[Outcome]:
    """Send to every destination at once, each retried until ``act_by`` (on
    ``clocks.wall``)."""
    delivery = _Delivery(context, values, act_by, settings.attempt_timeout, marks, senders,
                         clocks, warn)  # fmt: skip
    outcomes = [Outcome(d) for d in settings.destinations]
    threads = [
        threading.Thread(target=_send_one, args=(outcome, delivery), daemon=True)
        for outcome in outcomes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, act_by - clocks.wall()) + 1.0)
    return outcomes


def mark_key(context: HookContext, destination: Destination) -> str:
    return f"notify:{context.key()}:{destination.key}"


@dataclass(frozen=True)
class _Delivery:
    """What every destination's sender thread shares."""

    context: HookContext
    values: Mapping[str, Any]
    act_by: float
    attempt_timeout: float
    marks: Marks | None
    senders: Any
    clocks: Clocks
    warn: Callable[[str], None]


def _send_one(outcome: Outcome, delivery: _Delivery) -> None:
    context, values, act_by = delivery.context, delivery.values, delivery.act_by
    attempt_timeout, marks, senders = delivery.attempt_timeout, delivery.marks, delivery.senders
    clock, sleep, warn = delivery.clocks.wall, delivery.clocks.sleep, delivery.warn
    destination = outcome.destination
    key = mark_key(context, destination)
    if marks is not None:
        try:
            if marks.get(key) is not None:
                outcome.status = "already sent"
                return
        except MarksError as exc:
            warn(f"notify: {exc}; sending without the record of what was sent")
            marks = None
    pause = RETRY_FIRST
    while True:
        left = act_by - clock()
        if left <= 0.05:
            outcome.error = outcome.error or "no time left before the deadline"
            outcome.error += " (gave up at the deadline)" if outcome.attempts else ""
            return
        outcome.attempts += 1
        try:
            outcome.detail = senders.send(destination, values, min(attempt_timeout, left)) or {}
        except Failure as exc:
            outcome.error = str(exc)
            if not exc.retry:
                return
            left = act_by - clock()
            if left <= pause:
                outcome.error += " (gave up at the deadline)"
                return
            sleep(pause)
            pause = min(pause * 2, RETRY_MAX)
            continue
        outcome.status = "sent"
        outcome.error = ""
        if marks is not None:
            try:
                marks.put(key, {"destination": destination.label})
            except MarksError as exc:
                warn(f"notify: sent, but {exc}: a restart may send it again")
        return


def message_id(context: HookContext) -> str:
    """The same for every try and restart of one notice: receivers can de-duplicate."""
    return hashlib.sha256(f"{context.instance_id}/{context.key()}".encode()).hexdigest()[:32]


def hostname() -> str:
    return socket.gethostname()


def destinations_from(
    flags: Mapping[str, Sequence[str]], tag: bool, environ: Mapping[str, str]
) -> tuple[Destination, ...]:
    """The flags' destinations; without any, the settings' (SPOTWATCH_NOTIFY_*)."""
    pairs: list[tuple[str, str]] = [(k, t) for k, targets in flags.items() for t in targets]
    if tag:
        pairs.append((TAG, "instance"))
    if not pairs:
        for kind, name in (
            (WEBHOOK, "SPOTWATCH_NOTIFY_WEBHOOK_URL"),
            (SLACK, "SPOTWATCH_WEBHOOK_URL"),
            (SNS, "SPOTWATCH_NOTIFY_SNS_TOPIC"),
            (EVENTBRIDGE, "SPOTWATCH_NOTIFY_EVENT_BUS"),
        ):
            for target in environ.get(name, "").split():
                pairs.append((kind, target))
        if environ.get("SPOTWATCH_NOTIFY_TAG", "").strip().lower() in ("1", "true", "yes"):
            pairs.append((TAG, "instance"))
    out: list[Destination] = []
    for kind, target in pairs:
        destination = parse_destination(kind, target)
        if destination not in out:
            out.append(destination)
    return tuple(out)
