"""An asyncio client for wsedge (protocol v1), with the browser and Rust clients' semantics.

    import asyncio, wsedge

    async def main():
        client = wsedge.connect("ws://127.0.0.1:8080/ws")
        tasks = await client.subscribe("tasks", group="workers", ack=True)
        async for task in tasks:
            await client.publish("results", task.data)
            await task.ack()          # or task.nak(delay=5.0), task.term("reason")

- Reconnects with full-jitter backoff (0.5 s doubling to 20 s) and a watchdog: it pings every
  ``heartbeat`` seconds and reconnects when nothing arrived for ``heartbeat + grace``.
- ``token``, or ``get_token`` (an async function) before each connect and before ``exp``
  (the ``refresh`` op).
- Resubscribes after a reconnect, with ``since`` on channels with history; a ``recovery``
  event says when what was missed could not all be replayed.
- Publishes and sends carry a ``msg_id`` (generated unless given) and are kept until their
  ``ok``: made while disconnected (within ``buffer_max``, ``buffer_max_bytes``) or lost with a
  connection, they are resent after the reconnect; the server's dedup makes a repeat a
  ``duplicate``.
- Memory is bounded: past ``max_queued_bytes`` of messages the application has not taken, the
  connection is dropped and resumed later from where the application got to; a message over
  ``max_message_size`` (16 MiB, as sent and decompressed) closes the connection (1009).
- ``lz4=True`` asks for ``wsedge.v1.lz4`` (large messages arrive compressed); it needs the
  ``lz4`` package: ``pip install "./clients/python[lz4]"``.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import websockets
from websockets.asyncio.client import connect as ws_connect

__all__ = ["connect", "Client", "Message", "Subscription", "WsedgeError", "matches"]


class WsedgeError(Exception):
    """An error answer from the server (``code`` as in PROTOCOL.md), or a client refusal."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}")
        self.code = code


def matches(pattern: str, channel: str) -> bool:
    """Whether subscription ``pattern`` (NATS ``*`` and ``>``) matches ``channel``."""
    p, c = pattern.split("."), channel.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return i == len(p) - 1 and len(c) > i
        if i >= len(c) or (token != "*" and token != c[i]):
            return False
    return len(p) == len(c)


class _Refused(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def lz4_text(frame: bytes, max_size: int) -> str:
    """The text of a ``wsedge.v1.lz4`` binary frame (its length as 4 bytes LE, then an lz4
    block): refused with 1009 before anything is allocated when it says it is longer than
    ``max_size``, with 1007 when it is not a valid block of that length."""
    import lz4.block

    if len(frame) < 4:
        raise _Refused(1007, "an lz4 frame shorter than its length")
    size = int.from_bytes(frame[:4], "little")
    if size > max_size:
        raise _Refused(1009, f"an lz4 message of {size} bytes (max_message_size {max_size})")
    try:
        text = lz4.block.decompress(frame[4:], uncompressed_size=size)
        if len(text) != size:
            raise ValueError("shorter than its length")
        return text.decode()
    except Exception as e:
        raise _Refused(1007, f"bad lz4 frame: {e}") from None


def _token_expiry(token: str) -> Optional[int]:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    except Exception:
        return None


@dataclass
class Message:
    """A delivered message; settle one with ``needs_ack`` by ack(), nak(delay) or term(reason)."""

    id: str
    data: Any
    channel: Optional[str] = None
    user: Optional[str] = None
    sender: Optional[str] = None
    priority: str = "normal"
    offset: Optional[int] = None
    epoch: Optional[str] = None
    redelivered: int = 0
    needs_ack: bool = False
    _client: Any = field(default=None, repr=False)
    _size: int = field(default=0, repr=False)

    async def ack(self) -> None:
        self._client._settle({"op": "ack", "id": self.id})

    async def nak(self, delay: float = 0.0) -> None:
        self._client._settle({"op": "nak", "id": self.id, "delay_ms": int(delay * 1000)})

    async def term(self, reason: Optional[str] = None) -> None:
        frame = {"op": "term", "id": self.id}
        if reason is not None:
            frame["reason"] = reason
        self._client._settle(frame)


class Subscription:
    """A subscription's messages, in order: ``async for m in sub`` or ``await sub.next()``."""

    def __init__(self, client: "Client", channel: str, options: dict):
        self.channel = channel
        self.options = options
        self.position: Optional[tuple] = None
        if options.get("since"):
            self.position = (options["since"]["epoch"], options["since"]["offset"])
        self._client = client
        self._queue: asyncio.Queue = asyncio.Queue()
        self._ready: asyncio.Future = asyncio.get_running_loop().create_future()

    @property
    def key(self) -> str:
        return f"{self.channel}\0{self.options.get('group') or ''}"

    async def next(self, timeout: Optional[float] = None) -> Message:
        m = await asyncio.wait_for(self._queue.get(), timeout)
        self._client._queued -= m._size
        return m

    def __aiter__(self):
        return self

    async def __anext__(self) -> Message:
        return await self.next()

    async def unsubscribe(self) -> None:
        await self._client._unsubscribe(self)

    def _frame(self) -> dict:
        o = self.options
        f = {"op": "subscribe", "channel": self.channel}
        for k in ("group", "balance"):
            if o.get(k):
                f[k] = o[k]
        for k in ("ack", "durable", "presence"):
            if o.get(k):
                f[k] = True
        plain = not o.get("ack") and not o.get("group")
        if plain and o.get("recover", True) and self.position is not None:
            f["since"] = {"epoch": self.position[0], "offset": self.position[1]}
        return f

    def _fresh(self, frame: dict) -> bool:
        if "offset" not in frame or self.options.get("ack") or self.options.get("group"):
            return True
        epoch, offset = frame.get("epoch"), frame["offset"]
        if self.position is not None and self.position[0] == epoch and offset <= self.position[1]:
            return False
        self.position = (epoch, offset)
        return True


def connect(url: str, **options: Any) -> "Client":
    """Starts connecting (returns at once); requests made meanwhile wait for the connection."""
    return Client(url, **options)


class Client:
    """A connection that keeps itself connected. Events (dicts with ``type``: ``connecting``,
    ``connected``, ``disconnected`` with ``code``/``reason``/``retry_in``, ``recovery``,
    ``join``/``leave``, ``error``, ``closed``) go to ``events`` (a bounded queue; the oldest are
    dropped) and to ``on_event`` callbacks."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        get_token: Optional[Callable[[], Awaitable[str]]] = None,
        min_delay: float = 0.5,
        max_delay: float = 20.0,
        heartbeat: float = 10.0,
        grace: float = 5.0,
        refresh_before: float = 30.0,
        buffer_max: int = 1000,
        buffer_max_bytes: int = 1 << 20,
        max_queued_bytes: int = 16 << 20,
        max_message_size: int = 16 << 20,
        lz4: bool = False,
    ):
        if not url.startswith(("ws://", "wss://")):
            raise WsedgeError("invalid", f"not a ws:// or wss:// URL: {url}")
        self.url = url
        self.token = token
        self.get_token = get_token
        self.min_delay, self.max_delay = min_delay, max_delay
        self.heartbeat, self.grace, self.refresh_before = heartbeat, grace, refresh_before
        self.buffer_max, self.buffer_max_bytes = buffer_max, buffer_max_bytes
        self.max_queued_bytes = max_queued_bytes
        self.max_message_size = max_message_size
        if lz4:
            try:
                import lz4.block  # noqa: F401
            except ImportError:
                raise WsedgeError("invalid", "lz4=True needs the lz4 package: pip install lz4 "
                                             "(or this package's [lz4] extra)")
        self.lz4 = lz4
        self.state = "disconnected"
        self.events: asyncio.Queue = asyncio.Queue(maxsize=1024)
        self._callbacks: list = []
        self._subs: dict[str, Subscription] = {}
        self._direct: Optional[asyncio.Queue] = None
        self._pending: dict[int, dict] = {}  # ref -> {text, future, buffer, sub}
        self._pending_bytes = 0
        self._refs = itertools.count(1)
        self._ids = itertools.count(1)
        self._prefix = os.urandom(8).hex()
        self._queued = 0
        self._ws = None
        self._closed = False
        self._attempt = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    def on_event(self, callback: Callable[[dict], None]) -> None:
        self._callbacks.append(callback)

    async def subscribe(self, channel: str, *, group: Optional[str] = None, balance: Optional[str] = None,
                        ack: bool = False, durable: bool = False, presence: bool = False,
                        since: Optional[dict] = None, recover: bool = True) -> Subscription:
        """Subscribes; returns once the server confirmed it (the first time)."""
        options = dict(group=group, balance=balance, ack=ack, durable=durable, presence=presence,
                       since=since, recover=recover)
        sub = Subscription(self, channel, options)
        if sub.key in self._subs:
            raise WsedgeError("already_subscribed", f"already subscribed to {channel}")
        self._subs[sub.key] = sub
        if self.connected:
            await self._send_subscribe(sub)
        await sub._ready
        return sub

    def direct_messages(self) -> Subscription:
        """Direct messages to this connection's user from now on."""
        sub = Subscription(self, "", {})
        self._direct = sub._queue
        return sub

    async def publish(self, channel: str, data: Any, **options: Any) -> dict:
        """Publishes; the server's ok (``duplicate``, ``scheduled`` when they apply)."""
        return await self.request(self._delivery({"op": "publish", "channel": channel, "data": data}, options))

    async def send(self, user: str, data: Any, **options: Any) -> dict:
        """Sends to ``user``'s connections (``ack=True`` / ``persist=True`` for an inbox)."""
        return await self.request(self._delivery({"op": "send", "user": user, "data": data}, options))

    async def presence(self, channel: str) -> dict:
        return await self.request({"op": "presence", "channel": channel})

    async def history(self, channel: str, limit: Optional[int] = None) -> dict:
        frame = {"op": "history", "channel": channel}
        if limit is not None:
            frame["limit"] = limit
        return await self.request(frame)

    async def request(self, frame: dict, *, buffer: bool = True) -> dict:
        """Any request, buffered until answered (unless ``buffer=False``); its answer."""
        if self._closed:
            raise WsedgeError("closed", "the client was closed")
        ref = next(self._refs)
        frame = {**frame, "ref": ref}
        text = json.dumps(frame, separators=(",", ":"))
        if buffer and (len(self._pending) >= self.buffer_max
                       or self._pending_bytes + len(text) > self.buffer_max_bytes):
            raise WsedgeError("buffer_full", f"{len(self._pending)} requests await an answer")
        if not buffer and not self.connected:
            raise WsedgeError("disconnected", "not connected")
        future = asyncio.get_running_loop().create_future()
        self._pending[ref] = {"text": text if buffer else None, "future": future, "size": len(text) if buffer else 0}
        self._pending_bytes += len(text) if buffer else 0
        if self.connected:
            await self._send(text)
        return await future

    async def close(self) -> None:
        """Closes for good; pending requests fail with ``closed``."""
        self._closed = True
        if self._ws is not None:
            await self._ws.close(1000, "client closed")
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, Exception):
            pass
        self._fail_all(WsedgeError("closed", "the client was closed"))
        self._set_state("closed")

    # Internals.

    def _delivery(self, frame: dict, o: dict) -> dict:
        frame["msg_id"] = o.get("msg_id") or f"{self._prefix}-{next(self._ids)}"
        for key in ("priority", "deliver_at"):
            if o.get(key):
                frame[key] = o[key]
        for key in ("persist", "ack"):
            if o.get(key):
                frame[key] = True
        if o.get("delay") is not None:
            frame["delay_ms"] = int(o["delay"] * 1000)
        return frame

    def _emit(self, event: dict) -> None:
        if self.events.full():
            self.events.get_nowait()
        self.events.put_nowait(event)
        for callback in self._callbacks:
            callback(event)

    def _set_state(self, state: str, **detail: Any) -> None:
        self.state = state
        self._emit({"type": state, **detail})

    def _settle(self, frame: dict) -> None:
        if self.connected and self._ws is not None:
            asyncio.get_running_loop().create_task(self._send(json.dumps(frame)))

    async def _send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except Exception:
            pass  # the reader notices the loss; buffered requests are resent

    async def _send_subscribe(self, sub: Subscription) -> None:
        frame = sub._frame()
        ref = next(self._refs)
        frame["ref"] = ref
        self._pending[ref] = {"text": None, "sub": sub, "asked_since": "since" in frame, "size": 0}
        await self._send(json.dumps(frame))

    async def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub.key, None)
        if self.connected:
            frame = {"op": "unsubscribe", "channel": sub.channel}
            if sub.options.get("group"):
                frame["group"] = sub.options["group"]
            await self.request(frame, buffer=False)

    def _fail_all(self, error: Exception) -> None:
        for p in self._pending.values():
            if p.get("future") is not None and not p["future"].done():
                p["future"].set_exception(error)
        self._pending.clear()
        self._pending_bytes = 0

    async def _run(self) -> None:
        while not self._closed:
            self._set_state("connecting", attempt=self._attempt)
            code, reason = await self._serve()
            self._lost()
            if self._closed:
                break
            cap = min(self.max_delay, self.min_delay * 2 ** min(self._attempt, 16))
            delay = self.min_delay + random.random() * max(0.0, cap - self.min_delay)
            self._attempt += 1
            self._set_state("disconnected", code=code, reason=reason, retry_in=delay)
            await asyncio.sleep(delay)

    async def _serve(self) -> tuple:
        try:
            if self.get_token is not None:
                self.token = await self.get_token()
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
            protocols = ["wsedge.v1.lz4", "wsedge.v1"] if self.lz4 else ["wsedge.v1"]
            ws = await asyncio.wait_for(
                ws_connect(self.url, additional_headers=headers, subprotocols=protocols,
                           ping_interval=None, max_size=self.max_message_size),
                self.heartbeat + self.grace)
        except Exception as e:  # refused, 401, timeout: reported, then retried
            return 0, str(e) or type(e).__name__
        self._ws = ws
        watchdog = asyncio.get_running_loop().create_task(self._watch(ws))
        try:
            async for text in ws:
                self._heard = time.monotonic()
                if isinstance(text, bytes):
                    try:
                        if not self.lz4:
                            raise _Refused(1003, "a binary frame, but lz4 was not asked for")
                        text = lz4_text(text, self.max_message_size)
                    except _Refused as refused:
                        await ws.close(refused.code, refused.reason)
                        return refused.code, refused.reason
                await self._on_frame(text)
                if self._queued > self.max_queued_bytes:
                    await ws.close(1000, "application too slow")
                    return 0, "the application is not taking its messages (max_queued_bytes)"
            return ws.close_code or 1006, ws.close_reason or "connection closed"
        except websockets.ConnectionClosed as e:
            # The server's close frame; else the one this side sent (1009 for a message over
            # max_message_size); else none came.
            frame = e.rcvd or e.sent
            return (frame.code, frame.reason) if frame else (1006, "connection closed")
        except asyncio.TimeoutError:
            return 4000, "watchdog"
        finally:
            watchdog.cancel()
            self._ws = None

    async def _watch(self, ws) -> None:
        """Pings when due; closes the connection when nothing was heard for heartbeat + grace;
        refreshes the token before it expires."""
        self._heard = last_ping = time.monotonic()
        exp = _token_expiry(self.token) if (self.token and self.get_token) else None
        while True:
            await asyncio.sleep(min(self.heartbeat, 1.0))
            now = time.monotonic()
            if now - self._heard > self.heartbeat + self.grace:
                await ws.close(4000, "watchdog")
                return
            if self.connected and now - last_ping >= self.heartbeat:
                last_ping = now
                await self._send('{"op":"ping"}')
            if exp is not None and time.time() >= exp - self.refresh_before:
                exp = None
                try:
                    token = await self.get_token()
                    await self.request({"op": "refresh", "token": token}, buffer=False)
                    self.token = token
                    exp = _token_expiry(token)
                except Exception as e:
                    self._emit({"type": "error", "error": e})

    def _lost(self) -> None:
        self.state = "disconnected"
        for ref in [r for r, p in self._pending.items() if p["text"] is None]:
            p = self._pending.pop(ref)
            if p.get("future") is not None and not p["future"].done():
                p["future"].set_exception(WsedgeError("disconnected", "the connection was lost"))

    async def _on_frame(self, text: str) -> None:
        frame = json.loads(text)
        op = frame.get("op")
        if op == "welcome":
            self._attempt = 0
            self._set_state("connected", connection=frame.get("connection"), user=frame.get("user"))
            # Subscriptions first, so a resent publish reaches this client's own too.
            for sub in list(self._subs.values()):
                await self._send_subscribe(sub)
            for p in list(self._pending.values()):
                if p["text"] is not None:
                    await self._send(p["text"])
        elif op == "message":
            self._deliver(frame, len(text))
        elif op in ("join", "leave"):
            self._emit({"type": op, **frame})
        elif op != "pong":
            self._answer(frame)

    def _message(self, frame: dict, size: int) -> Message:
        return Message(id=frame.get("id", ""), data=frame.get("data"), channel=frame.get("channel"),
                       user=frame.get("user"), sender=frame.get("from"),
                       priority=frame.get("priority", "normal"), offset=frame.get("offset"),
                       epoch=frame.get("epoch"), redelivered=frame.get("redelivered", 0),
                       needs_ack=frame.get("ack") is True, _client=self, _size=size)

    def _deliver(self, frame: dict, size: int) -> None:
        channel = frame.get("channel")
        if channel is None:
            if self._direct is not None:
                self._queued += size
                self._direct.put_nowait(self._message(frame, size))
            return
        needs_ack = frame.get("ack") is True
        for sub in self._subs.values():
            if matches(sub.channel, channel) and bool(sub.options.get("ack")) == needs_ack and sub._fresh(frame):
                self._queued += size
                sub._queue.put_nowait(self._message(frame, size))

    def _answer(self, frame: dict) -> None:
        error = frame.get("op") == "error"
        p = self._pending.pop(frame.get("ref"), None) if isinstance(frame.get("ref"), int) else None
        if p is None:
            if error:
                self._emit({"type": "error", "error": WsedgeError(frame.get("code", ""), frame.get("message", ""))})
            return
        self._pending_bytes -= p["size"]
        sub = p.get("sub")
        if sub is not None:
            self._subscribed(sub, p["asked_since"], frame, error)
            return
        future = p["future"]
        if future.done():
            return
        if error:
            future.set_exception(WsedgeError(frame.get("code", ""), frame.get("message", "")))
        else:
            future.set_result(frame)

    def _subscribed(self, sub: Subscription, asked_since: bool, frame: dict, error: bool) -> None:
        if error:
            self._subs.pop(sub.key, None)
            failure = WsedgeError(frame.get("code", ""), frame.get("message", ""))
            if not sub._ready.done():
                sub._ready.set_exception(failure)
            else:
                self._emit({"type": "error", "error": failure})
            return
        if "epoch" in frame and "offset" in frame:
            lost = frame.get("recovered") is False
            if asked_since:
                self._emit({"type": "recovery", "channel": sub.channel, "recovered": not lost})
            # After a recovery the replayed messages move the position (the ok may come first);
            # otherwise it starts at the ok's.
            if lost or sub.position is None or sub.position[0] != frame["epoch"]:
                sub.position = (frame["epoch"], frame["offset"])
        if not sub._ready.done():
            sub._ready.set_result(sub)
