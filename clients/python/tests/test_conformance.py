"""The conformance list, run against the Python client and a real wsedge server (the binary
built by cargo: WSEDGE_BIN, or target/debug/wsedge of this repository): connect and auth,
subscribe/publish, patterns, a group (each message to exactly one member), direct sends,
ack/nak/term with redelivery, and recovery after the server is killed and restarted, with
publishes made meanwhile sent once, and a history lost in a restart reported as
``recovered: False``."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import wsedge

ROOT = Path(__file__).resolve().parents[3]
BINARY = os.environ.get("WSEDGE_BIN", str(ROOT / "target" / "debug" / "wsedge"))
SECRET = "a test secret of at least 32 bytes!"
STEP = 10.0


class Server:
    """A wsedge process on 127.0.0.1 (a free port unless `listen` is given)."""

    def __init__(self, store, listen="127.0.0.1:0", **config):
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEDGE_")}
        env.update({"WSEDGE_CONFIG": str(ROOT / "config" / "wsedge.toml"), "WSEDGE_LOG": "warn",
                    "WSEDGE_STORE_PATH": str(store)})
        env.update({f"WSEDGE_{k}": str(v) for k, v in config.items()})
        self.process = subprocess.Popen([BINARY, "--listen", listen], env=env,
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"wsedge did not start: {line!r}")
        self.addr = line.split()[3]
        self.url = f"ws://{self.addr}/ws"

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STEP)

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STEP)


@pytest.fixture
def store():
    path = Path(tempfile.mkdtemp(prefix="wsedge-py-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(store):
    s = Server(store, SERVER_SHARDS=2)
    yield s
    s.stop()


def token(user, seconds=600):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": user, "exp": int(time.time()) + seconds}).encode())
    signature = b64(hmac.new(SECRET.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + signature).decode()


QUICK = dict(min_delay=0.1, max_delay=0.5, heartbeat=1.0, grace=2.0)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def run_with_restart(store, config, scenario):
    """Runs ``scenario(first, restart)``: ``first`` is a server on ``store``; ``restart()``
    starts another on the same port and store (after ``first.kill9()``). Both are stopped."""
    servers = [Server(store, **config)]

    def restart():
        servers.append(Server(store, listen=servers[0].addr, **config))
        return servers[-1]

    try:
        run(scenario(servers[0], restart))
    finally:
        for server in servers:
            server.stop()


async def take(sub, n):
    return [(await sub.next(STEP)).data for _ in range(n)]


async def quiet(sub):
    try:
        await sub.next(0.3)
        return False
    except asyncio.TimeoutError:
        return True


def test_connect_auth_and_direct_send(store):
    server = Server(store, SERVER_SHARDS=2, AUTH_HS256_SECRET=SECRET)

    async def scenario():
        alice = wsedge.connect(server.url, token=token("alice"), **QUICK)
        inbox = alice.direct_messages()
        bob = wsedge.connect(server.url, token=token("bob"), **QUICK)
        await alice.subscribe("ready")
        ok = await bob.send("alice", "psst")
        assert ok["delivered"] == 1
        m = await inbox.next(STEP)
        assert (m.user, m.sender, m.data) == ("alice", "bob", "psst")
        # A bad token: refused at the upgrade, retried, the reason given.
        mallory = wsedge.connect(server.url, token="not.a.token", **QUICK)
        while True:
            event = await asyncio.wait_for(mallory.events.get(), STEP)
            if event["type"] == "disconnected":
                assert "401" in event["reason"], event
                break
        for c in (alice, bob, mallory):
            await c.close()

    try:
        run(scenario())
    finally:
        server.stop()


def test_subscribe_publish_and_patterns(server):
    async def scenario():
        client = wsedge.connect(server.url, lz4=True, **QUICK)  # large messages compressed
        room = await client.subscribe("room")
        news = await client.subscribe("news.>")
        other = wsedge.connect(server.url, **QUICK)
        for channel, data in [("room", "a"), ("news.eu", "b"), ("news.eu.fr", "c"), ("sport", "d")]:
            assert (await other.publish(channel, data))["op"] == "ok"
        await other.publish("room", "x" * 4000)
        assert await take(room, 2) == ["a", "x" * 4000]
        m = await news.next(STEP)
        assert (m.channel, m.data) == ("news.eu", "b")
        assert await take(news, 1) == ["c"]
        assert await quiet(room) and await quiet(news)
        with pytest.raises(wsedge.WsedgeError) as refused:
            await other.publish("news.*", 1)
        assert refused.value.code == "bad_channel"
        await client.close()
        await other.close()

    run(scenario())


def test_an_lz4_frame_is_read_within_its_bound_and_refused_past_it():
    import lz4.block

    text = "x" * 5000
    frame = lz4.block.compress(text.encode())  # with its length in front, as the server's
    assert wsedge.lz4_text(frame, 5000) == text
    for bad, code in [(frame, 1009), (b"\xff\xff\xff\xff\x10\0\0\0\0", 1009), (b"\x01\0", 1007),
                      (frame[:-3], 1007)]:
        with pytest.raises(Exception) as refused:
            wsedge.lz4_text(bad, 4999 if bad is frame else 16 << 20)
        assert refused.value.code == code, (bad[:8], refused.value)


def test_a_group_gives_each_message_to_exactly_one_member(server):
    async def scenario():
        members = []
        for _ in range(3):
            c = wsedge.connect(server.url, **QUICK)
            members.append((c, await c.subscribe("jobs", group="workers")))
        producer = wsedge.connect(server.url, **QUICK)
        for n in range(30):
            await producer.publish("jobs", n)
        seen = []
        while len(seen) < 30:
            got_any = False
            for _, sub in members:
                try:
                    seen.append((await sub.next(0.05)).data)
                    got_any = True
                except asyncio.TimeoutError:
                    pass
            assert got_any or len(seen) == 30, f"only {len(seen)} of 30: {seen}"
        assert sorted(seen) == list(range(30))
        for _, sub in members:
            assert await quiet(sub)
        for c, _ in members:
            await c.close()
        await producer.close()

    run(scenario())


def test_ack_nak_term_and_redelivery(store):
    server = Server(store, SERVER_SHARDS=2, ACK_WAIT_MS=300, ACK_BACKOFF_MS="[50]")

    async def scenario():
        worker = wsedge.connect(server.url, **QUICK)
        tasks = await worker.subscribe("tasks", group="w", ack=True)
        producer = wsedge.connect(server.url, **QUICK)
        for n in ["ack", "nak", "term", "ignore"]:
            await producer.publish("tasks", n)
        for _ in range(4):
            m = await tasks.next(STEP)
            assert m.needs_ack
            if m.data == "ack":
                await m.ack()
            elif m.data == "nak":
                await m.nak(0)
            elif m.data == "term":
                await m.term("not for us")
        again = []
        for _ in range(2):
            m = await tasks.next(STEP)
            again.append((m.data, m.redelivered))
            await m.ack()
        assert sorted(again) == [("ignore", 1), ("nak", 1)]
        assert await quiet(tasks)
        with pytest.raises(wsedge.WsedgeError) as refused:
            await worker.request({"op": "ack", "id": "nope"})
        assert refused.value.code == "unknown_message"
        await worker.close()
        await producer.close()

    try:
        run(scenario())
    finally:
        server.stop()


def test_recovery_after_a_restart_with_the_offline_buffer_sent_once(store):
    config = dict(SERVER_SHARDS=2, HISTORY_SIZE=10000, HISTORY_DURABLE="true")

    async def scenario(first, restart):
        client = wsedge.connect(first.url, **QUICK)
        room = await client.subscribe("room")
        for n in range(1, 51):
            await client.publish("room", f"p{n}")
        ok = await client.publish("room", "once", msg_id="once-1")
        assert not ok.get("duplicate")
        first.kill9()
        while (await asyncio.wait_for(client.events.get(), STEP))["type"] != "disconnected":
            pass
        # Publishes while the server is down wait in the buffer.
        buffered = [asyncio.ensure_future(client.publish("room", f"p{n}")) for n in range(51, 101)]
        other = wsedge.connect(restart().url, **QUICK)
        for n in range(1, 21):
            await other.publish("room", f"r{n}")
        await asyncio.gather(*buffered)
        # A resend of a publish confirmed before the crash is a duplicate.
        assert (await client.publish("room", "once", msg_id="once-1"))["duplicate"] is True
        got = await take(room, 121)
        assert await quiet(room)
        expected = {f"p{n}" for n in range(1, 101)} | {f"r{n}" for n in range(1, 21)} | {"once"}
        assert len(set(got)) == len(got) == 121 and set(got) == expected
        events = []
        while not client.events.empty():
            events.append(client.events.get_nowait())
        recoveries = [e for e in events if e["type"] == "recovery"]
        assert recoveries and all(e["recovered"] for e in recoveries), events
        await client.close()
        await other.close()

    run_with_restart(store, config, scenario)


def test_a_lost_history_is_reported_as_recovered_false(store):
    """History kept in memory only is gone after a restart: the client says so and keeps the
    subscription, never hiding the gap."""
    config = dict(SERVER_SHARDS=2, HISTORY_SIZE=100)

    async def scenario(first, restart):
        client = wsedge.connect(first.url, **QUICK)
        room = await client.subscribe("room")
        await client.publish("room", "before")
        assert await take(room, 1) == ["before"]
        first.kill9()
        restart()
        while True:
            event = await asyncio.wait_for(client.events.get(), STEP)
            if event["type"] == "recovery":
                break
        assert event["recovered"] is False, event
        await client.publish("room", "after")
        assert await take(room, 1) == ["after"]
        await client.close()

    run_with_restart(store, config, scenario)
