"""Shared helpers of the measurement scripts: start the release wsedge, open raw protocol-v1
connections (handshake + welcome), read /proc counters. Loopback only."""
import asyncio, os, re, subprocess, tempfile

HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(shards, binary=None):
    """Starts target/release/wsedge (or `binary`) on a free loopback port, from an empty folder so
    that it uses its embedded default config; returns (process, port)."""
    server = subprocess.Popen([os.path.abspath(binary or os.path.join(ROOT, "target/release/wsedge")), "--listen",
                               "127.0.0.1:0", "--shards", str(shards)], stdout=subprocess.PIPE,
                              cwd=tempfile.mkdtemp(prefix="wsedge-"),
                              env={**os.environ, "WSEDGE_LOG": "warn"})
    return server, int(server.stdout.readline().split()[3].rsplit(b":", 1)[1])


async def connect(port, i):
    """Opens connection number i (source address 127.0.0.1-4) and reads its welcome frame."""
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{1 + i % 4}", 0))
    w.write(HANDSHAKE)
    await r.readuntil(b"\r\n\r\n")
    head = await r.readexactly(2)
    await r.readexactly(head[1] & 0x7F)
    return r, w


def proc_field(pid, file, field):
    """An integer field of /proc/PID/FILE, e.g. ("status", "VmRSS") or ("io", "syscw")."""
    with open(f"/proc/{pid}/{file}") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))
