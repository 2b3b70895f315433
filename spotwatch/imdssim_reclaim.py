"""Alibaba Cloud and Tencent Cloud metadata simulators on 127.0.0.1.

Each serves its identity values and the reclaim time: 404 until scheduled, then
the time as the cloud writes it (Alibaba: ``2015-01-05T18:02:00Z``, UTC;
Tencent: ``2018-08-18 12:05:33``, UTC+8). The Alibaba one also issues tokens at
``PUT /latest/api/token`` and, with ``require_token``, refuses reads without one
(403). Faults: see ``simserver.FAULTS``.

    with TencentSimulator() as sim:
        sim.schedule_reclaim(reclaim_at=time.time() + 120, appear_at=time.time() + 2)
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from spotwatch.simserver import Reply, SimBase

META = "/latest/meta-data/"
TEXT = {"Content-Type": "text/plain"}


def alibaba_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def tencent_time(epoch: float) -> str:
    moment = datetime.fromtimestamp(int(epoch), timezone(timedelta(hours=8)))
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class _ReclaimSimulator(SimBase):
    cloud = ""
    reclaim_path = ""
    defaults: Mapping[str, str] = {}

    def __init__(self, *, port: int = 0, values: Mapping[str, str] | None = None) -> None:
        super().__init__(port=port)
        self._values = {**self.defaults, **(values or {})}
        self._timers: list[threading.Timer] = []

    def format_time(self, epoch: float) -> str:
        raise NotImplementedError

    def set_value(self, path: str, value: str | None) -> None:
        """Serve ``value`` at ``path`` (under /latest/meta-data/); None: 404."""
        with self._cond:
            if value is None:
                self._values.pop(path, None)
            else:
                self._values[path] = value
            self._cond.notify_all()

    def set_reclaim(self, text: str | None) -> None:
        """The reclaim time's body exactly as given (None: 404 again)."""
        self.set_value(self.reclaim_path, text)

    def schedule_reclaim(self, *, reclaim_at: float, appear_at: float | None = None) -> str:
        """The reclaim time ``reclaim_at`` appears at wall time ``appear_at`` (now if None).
        Returns it as the cloud writes it."""
        text = self.format_time(reclaim_at)
        delay = 0.0 if appear_at is None else max(0.0, appear_at - self._wall())
        timer = threading.Timer(delay, self.set_reclaim, (text,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return text

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().stop()

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        if fault in ("500", "503", "429"):
            return Reply(int(fault), f"fault {fault}\n".encode(), TEXT, fault)
        if fault in ("drop", "reset"):
            return Reply(0, fault=fault)
        if method != "GET":
            return Reply(405, b"Method Not Allowed\n", TEXT)
        key = path[len(META) :] if path.startswith(META) else None
        with self._cond:
            value = self._values.get(key) if key is not None else None
        if value is None:
            return Reply(404, b"Not Found\n", TEXT)
        if fault == "garbled":
            return Reply(200, b"\xff\xfe garbled \x00", TEXT, fault)
        return Reply(200, value.encode(), TEXT)


class AlibabaSimulator(_ReclaimSimulator):
    cloud = "alibaba"
    reclaim_path = "instance/spot/termination-time"
    defaults = {
        "instance-id": "i-bp67acfmxazb4ph1sim",
        "instance/instance-type": "ecs.g7.large",
        "region-id": "cn-hangzhou",
        "zone-id": "cn-hangzhou-i",
        "owner-account-id": "1234567890123456",
    }
    TOKEN_PATH = "/latest/api/token"
    TTL_HEADER = "x-aliyun-ecs-metadata-token-ttl-seconds"
    TOKEN_HEADER = "x-aliyun-ecs-metadata-token"

    def __init__(self, *, port: int = 0, values: Mapping[str, str] | None = None,
                 require_token: bool = False) -> None:  # fmt: skip
        super().__init__(port=port, values=values)
        self.require_token = require_token
        self._tokens: dict[str, float] = {}  # token -> expiry (wall)

    def format_time(self, epoch: float) -> str:
        return alibaba_time(epoch)

    def revoke_tokens(self) -> None:
        with self._cond:
            self._tokens.clear()

    def refuse(self, method: str, path: str, headers: Mapping[str, str]) -> Reply | None:
        if method == "PUT":
            return None  # answered in answer()
        token = headers.get(self.TOKEN_HEADER)
        with self._cond:
            valid = token is not None and self._tokens.get(token, 0.0) > self._wall()
        if token is not None and not valid:
            return Reply(401, b"Unauthorized\n", TEXT)
        if self.require_token and not valid:
            return Reply(403, b"Forbidden: a token is required\n", TEXT)
        return None

    def answer(self, method: str, path: str, query: Mapping[str, str],
               headers: Mapping[str, str], body: bytes, fault: str) -> Reply:  # fmt: skip
        if method == "PUT" and path == self.TOKEN_PATH and not fault:
            ttl = headers.get(self.TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return Reply(400, b"Bad Request: ttl 1..21600 seconds\n", TEXT)
            token = secrets.token_urlsafe(24)
            with self._cond:
                self._tokens[token] = self._wall() + int(ttl)
            return Reply(200, token.encode(), TEXT)
        return super().answer(method, path, query, headers, body, fault)


class TencentSimulator(_ReclaimSimulator):
    cloud = "tencent"
    reclaim_path = "spot/termination-time"
    defaults = {
        "instance-id": "ins-sim0a1b2",
        "instance/instance-type": "S5.MEDIUM4",
        "placement/region": "ap-guangzhou",
        "placement/zone": "ap-guangzhou-3",
    }

    def format_time(self, epoch: float) -> str:
        return tencent_time(epoch)


def simulator(cloud: str, *, port: int = 0, require_token: bool = False) -> _ReclaimSimulator:
    if cloud == "alibaba":
        return AlibabaSimulator(port=port, require_token=require_token)
    if cloud == "tencent":
        return TencentSimulator(port=port)
    raise ValueError(f"no reclaim-time simulator for {cloud!r}")


def serve(cloud: str, port: int, notice_in: float | None, lead: float,
          require_token: bool = False) -> _ReclaimSimulator:  # fmt: skip
    """Started; the reclaim time (``lead`` s after it appears) appears after ``notice_in`` s."""
    sim = simulator(cloud, port=port, require_token=require_token)
    sim.start()
    if notice_in is not None:
        appear = time.time() + notice_in
        sim.schedule_reclaim(reclaim_at=appear + lead, appear_at=appear)
    return sim
