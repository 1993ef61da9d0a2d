#!/usr/bin/env python3
"""The hostile-client audit as a script: each attack against a freshly spawned release wsedge on
127.0.0.1, bounded in count and time, one line each:

    attack  verdict (holds / breaks)  server RSS peak  victim p99  detail

A victim is a well-behaved client on the attacker's shard sending an echo every 5 ms. Exit code 1
when an attack breaks the server. Usage: scripts/hostile.py [--binary PATH] [--only NAME ...]
(scripts/hostile.sh builds the binary and runs this). Runs each server from an empty folder, so
the binary uses its embedded default config; the attacks that need other settings say so.
"""
import argparse, asyncio, json, os, re, resource, signal, socket, subprocess, sys, tempfile
import threading, time, traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n")
NO_LIMITS = {"LIMITS_MESSAGES_PER_S": "1000000000", "LIMITS_MESSAGES_BURST": "1000000000",
             "LIMITS_CONTROL_FRAMES_PER_S": "1000000000", "LIMITS_CONTROL_FRAMES_BURST": "1000000000",
             "CONNECTION_MAX_FRAGMENTS": "1000000000", "LIMITS_PUBLISH_BYTES_PER_S": "1000000000000",
             "LIMITS_PUBLISH_BURST_BYTES": "1000000000000"}
BINARY = os.path.join(ROOT, "target/release/wsedge")
SECTIONS = {"SERVER", "CONNECTION", "PROTOCOL", "LIMITS", "TLS", "AUTH", "GROUPS", "PRESENCE",
            "STORE", "ACK", "INBOX", "DEDUP", "API"}


class Server:
    """A wsedge process on a free loopback port, sampling its RSS in the background."""

    def __init__(self, env=None, shards=2, nofile=None):
        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.dir = tempfile.mkdtemp(prefix="wsedge-hostile-")
        env, self.unknown = dict(env or {}), []
        while True:
            full = {**os.environ, "WSEDGE_LOG": "error", **{f"WSEDGE_{k}": v for k, v in env.items()}}
            self.proc = subprocess.Popen([BINARY, "--listen", "127.0.0.1:0", "--shards", str(shards)],
                                         cwd=self.dir, env=full, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, preexec_fn=limit)
            line = self.proc.stdout.readline().split()
            if len(line) >= 4:
                break
            # An older build names settings WSEDGE_<KEY> without the section: retry with that
            # name; one that lacks a setting runs without it (reported in the detail).
            unknown = re.search(rb"unknown environment override WSEDGE_(\w+)", self.proc.stderr.read())
            name = unknown and unknown.group(1).decode()
            if name not in env:
                raise RuntimeError("wsedge did not start")
            value = env.pop(name)
            section, _, flat = name.partition("_")
            if section in SECTIONS and flat:
                env[flat] = value
            else:
                self.unknown.append(name)
        self.proc.stderr.close()
        self.port = int(line[3].rsplit(b":", 1)[1])
        self.baseline = self.rss()
        self.peak = self.baseline
        self.sampler = None

    def rss(self):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS:"))
        except (FileNotFoundError, StopIteration):
            return 0

    def alive(self):
        return self.proc.poll() is None

    async def sample(self):
        while True:
            self.peak = max(self.peak, self.rss())
            await asyncio.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def frame(opcode, payload=b"", fin=True):
    """A client frame with a zero mask (so the payload goes as it is)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def text(obj):
    return frame(1, (obj if isinstance(obj, str) else json.dumps(obj)).encode())


async def read_frame(r):
    b0, b1 = await r.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await r.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await r.readexactly(8), "big")
    return b0 & 0x0F, await r.readexactly(n)


async def read_json(r, timeout=5):
    while True:
        op, payload = await asyncio.wait_for(read_frame(r), timeout)
        if op == 1:
            return json.loads(payload)
        if op == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            return {"op": "close", "code": code, "reason": payload[2:].decode(errors="replace")}


async def http(port, request, source="127.0.0.1", timeout=5):
    """Sends raw bytes; returns (reader, writer, status) with the status line's code, or None."""
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout)
    w.write(request)
    try:
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        return r, w, int(head.split()[1])
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return r, w, None


async def ws(port, shard=None, tries=200):
    """A protocol-v1 connection (on `shard` if given): (reader, writer, welcome)."""
    for _ in range(tries):
        r, w, status = await http(port, UPGRADE)
        if status != 101:
            raise RuntimeError(f"upgrade answered {status}")
        welcome = await read_json(r)
        if shard is None or welcome["shard"] == shard:
            return r, w, welcome
        w.close()
    raise RuntimeError(f"no connection landed on shard {shard}")


async def victim(port, shard, seconds):
    """Echo round trips every 5 ms for `seconds`; returns (p99 ms, timeouts)."""
    r, w, _ = await ws(port, shard)
    rtts, timeouts, end = [], 0, time.time() + seconds
    while time.time() < end:
        t0 = time.perf_counter()
        w.write(text({"op": "echo", "data": 1}))
        try:
            while (await read_json(r, timeout=2)).get("op") != "echo":
                pass
            rtts.append((time.perf_counter() - t0) * 1000)
        except asyncio.TimeoutError:
            timeouts += 1
        await asyncio.sleep(0.005)
    w.close()
    rtts.sort()
    return (rtts[int(len(rtts) * 0.99) - 1] if rtts else float("inf")), timeouts


async def flood(w, first, chunk, seconds):
    """Writes `first`, then `chunk` over and over for `seconds` or until the server stops reading."""
    end = time.time() + seconds
    try:
        w.write(first)
        while time.time() < end:
            w.write(chunk)
            await w.drain()
    except (ConnectionError, OSError):
        pass


async def discard(r):
    try:
        while await r.read(1 << 16):
            pass
    except (ConnectionError, OSError):
        pass


class Blaster:
    """An attacker on its own threads, as fast as blocking sockets go (asyncio alone is too slow
    to flood): one writes `first`, then `chunk` over and over for `seconds` or until the server
    stops reading; one reads and discards what the server sends."""

    def __init__(self, port, first, chunk, seconds):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(UPGRADE)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += self.sock.recv(1)
        length = self.sock.recv(2)[1] & 0x7F
        self.shard = json.loads(self.sock.recv(length, socket.MSG_WAITALL))["shard"]
        self.stop = time.time() + seconds
        self.tail, self.closed_after = b"", None
        threading.Thread(target=self._write, args=(first, chunk), daemon=True).start()
        threading.Thread(target=self._read, daemon=True).start()

    def _write(self, first, chunk):
        try:
            self.sock.sendall(first)
            while time.time() < self.stop:
                self.sock.sendall(chunk)
        except OSError:
            pass

    def _read(self):
        started = time.time()
        try:
            while time.time() < self.stop:
                data = self.sock.recv(1 << 16)
                if not data:
                    break
                self.tail = (self.tail + data)[-256:]
        except OSError:
            pass
        if time.time() < self.stop:
            self.closed_after = time.time() - started

    def close_frame(self):
        """(code, reason) of a close frame that ended what the server sent, if one did."""
        for i in range(len(self.tail) - 1, -1, -1):
            n = self.tail[i + 1] if i + 1 < len(self.tail) else -1
            if self.tail[i] == 0x88 and 2 <= n <= 125 and i + 2 + n == len(self.tail):
                body = self.tail[i + 2:]
                return int.from_bytes(body[:2], "big"), body[2:].decode(errors="replace")
        return None

    def close(self):
        self.stop = 0
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def result(ok, server=None, p99=None, detail=""):
    return {"holds": bool(ok), "rss": server.peak if server else None, "p99": p99, "detail": detail}


# ---------------------------------------------------------------------------------- attacks

async def deep_json(server):
    r, w, _ = await ws(server.port)
    replies = []
    for message in ("[" * 10000 + "]" * 10000, '{"op":"echo","data":' + '{"a":' * 10000 + "1" + "}" * 10001,
                    '{"op":"ping","ref":' + "[" * 10000 + "]" * 10000 + "}"):
        w.write(text(message))
        replies.append((await read_json(r)).get("code"))
    alive = server.alive() and (await ws(server.port)) is not None
    return result(alive and replies == ["invalid_json"] * 3, server, detail=f"answers {replies}")


async def lone_surrogate(server):
    r, w, _ = await ws(server.port)
    w.write(text('{"op":"echo","data":"\\ud800","ref":1}'))
    reply = await read_json(r)
    return result(reply.get("code") == "invalid_json", server, detail=f"answer {reply.get('code') or reply.get('data')!r}")


def flood_attack(name, first, chunk, max_growth_mib=None):
    async def attack(server):
        attacker = Blaster(server.port, first, chunk, 4)
        await asyncio.sleep(0.2)
        p99, timeouts = await victim(server.port, attacker.shard, 3)
        attacker.close()
        ok = server.alive() and p99 < 50 and timeouts == 0
        detail = f"{timeouts} victim timeouts"
        if max_growth_mib is not None:
            grew = server.peak - server.baseline
            ok = ok and grew <= max_growth_mib
            detail += f", RSS grew {grew} MiB (bound {max_growth_mib})"
        return result(ok, server, p99, detail)
    attack.__name__ = name
    return attack


PING = frame(9)
EMPTY_CONTINUATION = frame(0, fin=False)
UNKNOWN_OP = text({"op": "x"})
ping_flood = flood_attack("ping_flood", b"", PING * 8192)
empty_fragment_flood = flood_attack("empty_fragment_flood", frame(1, fin=False), EMPTY_CONTINUATION * 8192)
unknown_op_flood = flood_attack("unknown_op_flood", b"", UNKNOWN_OP * 4096)
# The ops that cost more than a lookup: a presence query (a round trip to the channel's home
# shard), a group join and leave (a message to the group's home each), a direct message (one to
# every shard and an answer back from each), a refresh (a signature check).
presence_flood = flood_attack("presence_flood", text({"op": "subscribe", "channel": "room"}),
                              text({"op": "presence", "channel": "room"}) * 4096)
group_churn_flood = flood_attack("group_churn_flood", b"", (
    text({"op": "subscribe", "channel": "tasks.*", "group": "g", "ref": 1})
    + text({"op": "unsubscribe", "channel": "tasks.*", "group": "g"})) * 2048)
send_flood = flood_attack("send_flood", b"", text({"op": "send", "user": "nobody", "data": 1, "ref": 1}) * 4096)
refresh_flood = flood_attack("refresh_flood", b"", text({"op": "refresh", "token": "a.b.c"}) * 4096)
# Persisted sends to 2,048 users, as fast as the socket goes: every one is written to the store
# and kept in an inbox. Memory is held to inbox.max_bytes (16 MiB here), then inbox_full; the
# store's queue to store.queue_max_bytes, then store_unavailable.
persist_flood = flood_attack("persist_flood", b"", b"".join(
    text({"op": "send", "user": f"u{i}", "persist": True, "msg_id": f"m{i}", "data": "x" * 100, "ref": i})
    for i in range(2048)), max_growth_mib=200)
# Acks, naks, terms and cancels of ids that do not exist.
settle_flood = flood_attack("settle_flood", b"", (
    text({"op": "ack", "id": "nope"}) + text({"op": "nak", "id": "nope", "delay_ms": 5})
    + text({"op": "term", "id": "nope"}) + text({"op": "cancel", "id": "x:bob"})) * 1024)

# A durable acknowledged group whose only member (the attacker) never acks and never reads,
# fed persist publishes as fast as the socket goes: every one is written to the store and kept
# in the group's queue, to inbox.max_messages (then inbox_full) and inbox.max_bytes (16 MiB).
hoard_flood = flood_attack("hoard_flood", text(
    {"op": "subscribe", "channel": "hoard", "group": "g", "ack": True, "durable": True, "ref": 0}),
    b"".join(text({"op": "publish", "channel": "hoard", "persist": True, "msg_id": f"h{i}",
                   "data": "x" * 100, "ref": i}) for i in range(2048)), max_growth_mib=200)
# Durable groups under 2,048 names, over and over: groups.max_durable (100 here) of them are
# made, the rest refused; each join and leave is a message to the group's home.
durable_churn_flood = flood_attack("durable_churn_flood", b"", b"".join(
    text({"op": "subscribe", "channel": "c", "group": f"d{i}", "ack": True, "durable": True, "ref": i})
    + text({"op": "unsubscribe", "channel": "c", "group": f"d{i}"}) for i in range(2048)),
    max_growth_mib=200)


async def shutdown_under_flood(server):
    attacker = Blaster(server.port, b"", PING * 8192, 30)
    await asyncio.sleep(0.5)
    t0 = time.time()
    server.proc.send_signal(signal.SIGTERM)
    while server.alive() and time.time() - t0 < 20:
        await asyncio.sleep(0.05)
    took = time.time() - t0
    attacker.close()
    # shutdown_grace_ms is 2000 for this attack.
    return result(not server.alive() and took < 3.5, server, detail=f"exited {took:.1f} s after SIGTERM (grace 2 s)")


async def unsubscribed_publish_flood(server):
    message = text({"op": "publish", "channel": "nobody", "data": "x" * 65536})
    conns = [await ws(server.port) for _ in range(4)]
    readers = [asyncio.create_task(discard(r)) for r, _, _ in conns]
    await asyncio.gather(*(flood(w, b"", message, 5) for _, w, _ in conns))
    for t in readers:
        t.cancel()
    for _, w, _ in conns:
        w.close()
    await asyncio.sleep(3)
    after = server.rss()
    grown = server.peak - server.baseline
    return result(server.alive() and grown < 256 and after - server.baseline < 32, server,
                  detail=f"RSS +{grown} MiB at the peak, +{after - server.baseline} MiB 3 s after")


async def partial_frames(server):
    header = frame(2, b"x" * ((1 << 20) - 1))[:15]
    held = []
    for i in range(2000):
        r, w, _ = await ws(server.port)
        w.write(header)
        held.append(w)
    await asyncio.sleep(1)
    grown = server.rss() - server.baseline
    for w in held:
        w.close()
    return result(server.alive() and grown < 64, server, detail=f"RSS +{grown} MiB for 2,000 frames announcing 1 MiB")


async def open_file_limit(server):
    answered, hung, held = {}, 0, []
    sem = asyncio.Semaphore(50)

    async def one():
        nonlocal hung
        async with sem:
            try:
                r, w, status = await http(server.port, UPGRADE, timeout=3)
            except (asyncio.TimeoutError, OSError):
                status = None
            if status is None:
                hung += 1
            else:
                answered[status] = answered.get(status, 0) + 1
                held.append(w)
    await asyncio.gather(*(one() for _ in range(400)))
    _, _, health = await http(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
    for w in held:
        w.close()
    ok = hung == 0 and health in (200, 503) and answered.get(503, 0) > 0
    return result(ok, server, detail=f"open-file limit 256: answers {answered}, {hung} hung, /health {health}")


async def huge_headers(server):
    pad = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    statuses = {}

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            w.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            for _ in range(380):
                w.write(pad)
                await w.drain()
        except (ConnectionError, OSError):
            pass  # the server stopped reading: its answer may be waiting
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            status = int(head.split()[1])
        except (ConnectionError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            status = "closed"
        w.close()
        statuses[status] = statuses.get(status, 0) + 1
    await asyncio.gather(*(one() for _ in range(1000)))
    grown = server.peak - server.baseline
    return result(server.alive() and grown < 128, server, detail=f"1,000 requests of 380 KiB headers: {statuses}, RSS +{grown} MiB")


async def handshakes(server):
    bad = {"no Host": UPGRADE.replace(b"Host: x\r\n", b""),
           "HTTP/1.0": UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),
           "empty key": UPGRADE.replace(KEY, b""),
           "bad key": UPGRADE.replace(KEY, b"c2hvcnQ=")}
    got = {}
    for name, request in bad.items():
        _, w, status = await http(server.port, request)
        got[name] = status
        w.close()
    return result(all(s == 400 for s in got.values()), server, detail=", ".join(f"{k}: {v}" for k, v in got.items()))


async def message_ids(_server):
    ids = []
    for _ in range(3):
        with Server(shards=1) as s:
            r, w, _ = await ws(s.port)
            w.write(text({"op": "subscribe", "channel": "c"}))
            w.write(text({"op": "publish", "channel": "c", "data": 1}))
            ids.append((await read_json(r))["id"])
    return result(len(set(ids)) == len(ids), None, detail=f"first ids of 3 quick starts: {', '.join(ids)}")


async def overloaded_nowhere(server):
    pub_r, pub_w, _ = await ws(server.port, 0)
    far_r, far_w, _ = await ws(server.port, 1)
    for w in (pub_w, far_w):
        w.write(text({"op": "subscribe", "channel": "c"}))
    await asyncio.sleep(0.2)
    n = 3000
    pub_w.write(b"".join(text({"op": "publish", "channel": "c", "data": i, "ref": i}) for i in range(n)))
    ok, refused, local = set(), set(), set()
    while len(ok) + len(refused) < n:
        m = await read_json(pub_r)
        if m["op"] == "ok":
            ok.add(m["ref"])
        elif m["op"] == "error":
            refused.add(m["ref"])
        elif m["op"] == "message":
            local.add(m["data"])
    await asyncio.sleep(1)
    far = set()
    for r, got in ((pub_r, local), (far_r, far)):
        try:
            while True:
                m = await read_json(r, timeout=0.5)
                if m["op"] == "message":
                    got.add(m["data"])
        except asyncio.TimeoutError:
            pass
    holds = local == ok and far == ok and refused
    return result(holds, server, detail=f"{len(ok)} accepted, {len(refused)} overloaded; "
                  f"delivered {len(local)} locally, {len(far)} on the other shard")


async def rate_limit(server):
    subs = []
    for _ in range(200):
        r, w, _ = await ws(server.port)
        w.write(text({"op": "subscribe", "channel": "c"}))
        subs.append((r, w))
    readers = [asyncio.create_task(discard(r)) for r, _ in subs]
    burst = b"".join(text({"op": "publish", "channel": "c", "data": i}) for i in range(1000))
    publisher = Blaster(server.port, b"", burst, 10)
    while publisher.closed_after is None and time.time() < publisher.stop:
        await asyncio.sleep(0.05)
    for t in readers:
        t.cancel()
    closed = publisher.close_frame()
    publisher.close()
    ok = server.alive() and closed is not None and closed[0] == 1008
    took = f"{publisher.closed_after:.1f} s" if publisher.closed_after is not None else "never"
    return result(ok, server, detail=f"publisher closed with {closed} after {took} "
                  f"(limits.messages_per_s 10,000, burst 20,000)")


ATTACKS = [
    (deep_json, {}, {}),
    (lone_surrogate, {}, {}),
    (ping_flood, NO_LIMITS, {}),
    (empty_fragment_flood, NO_LIMITS, {}),
    (unknown_op_flood, NO_LIMITS, {}),
    (ping_flood, {}, {"label": "ping_flood (default limits)"}),
    (unknown_op_flood, {}, {"label": "unknown_op_flood (default limits)"}),
    (shutdown_under_flood, {**NO_LIMITS, "SERVER_SHUTDOWN_GRACE_MS": "2000"}, {}),
    (unsubscribed_publish_flood, NO_LIMITS, {}),
    (partial_frames, {}, {}),
    (open_file_limit, {}, {"nofile": 256}),
    (huge_headers, {}, {}),
    (handshakes, {}, {}),
    (message_ids, {}, {}),
    (overloaded_nowhere, {"SERVER_SHARD_QUEUE_CAPACITY": "2"}, {}),
    (rate_limit, {}, {}),
    (presence_flood, {}, {}),
    (group_churn_flood, {}, {}),
    (send_flood, {}, {}),
    (refresh_flood, {}, {}),
    (persist_flood, {**NO_LIMITS, "INBOX_MAX_BYTES": "16777216"}, {}),
    (settle_flood, NO_LIMITS, {}),
    (hoard_flood, {**NO_LIMITS, "INBOX_MAX_BYTES": "16777216"}, {}),
    (durable_churn_flood, {**NO_LIMITS, "GROUPS_MAX_DURABLE": "100"}, {}),
]


async def main():
    global BINARY
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=BINARY)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    BINARY = os.path.abspath(args.binary)
    print(f"{'attack':<36} {'verdict':<8} {'RSS peak':>9} {'victim p99':>11}  detail")
    broken = 0
    for attack, env, opts in ATTACKS:
        label = opts.get("label", attack.__name__)
        if args.only and attack.__name__ not in args.only:
            continue
        try:
            with Server(env, nofile=opts.get("nofile")) as server:
                server.sampler = asyncio.create_task(server.sample())
                try:
                    r = await asyncio.wait_for(attack(server), 120)
                finally:
                    server.sampler.cancel()
                if not server.alive() and attack is not shutdown_under_flood:
                    r = result(False, server, r["p99"], f"the server died ({server.proc.returncode}); " + r["detail"])
                if server.unknown:
                    r["detail"] += f" (this build lacks {', '.join(server.unknown)})"
        except Exception as e:  # an attack that cannot even run has broken the server
            traceback.print_exc(file=sys.stderr)
            r = result(False, None, None, f"{type(e).__name__}: {e}")
        broken += not r["holds"]
        rss = f"{r['rss']} MiB" if r["rss"] is not None else "-"
        p99 = f"{r['p99']:.1f} ms" if r["p99"] is not None else "-"
        print(f"{label:<36} {'holds' if r['holds'] else 'BREAKS':<8} {rss:>9} {p99:>11}  {r['detail']}", flush=True)
    sys.exit(1 if broken else 0)


asyncio.run(main())
