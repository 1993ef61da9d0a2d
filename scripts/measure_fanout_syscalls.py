#!/usr/bin/env python3
"""Measures wsedge's write syscalls per delivered message in a fan-out.

Usage: scripts/measure_fanout_syscalls.py [--subscribers 1000] [--messages 2000] [--shards 2]
Starts target/release/wsedge, connects N subscribers to one channel, then one publisher sends
--messages publishes as fast as it can (pipelined, no refs). Every subscriber counts the message
frames it receives. The server's write syscalls come from /proc/PID/io (syscw: write, writev,
sendmsg...) read before the first publish and after the last delivery; no tracer slows the server.
Bounded: it exits after the run (or after --timeout seconds).
"""
import argparse, asyncio, json, time

from wsraw import connect, proc_field, start_server

def client_frame(text):
    data = text.encode()
    n = len(data)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + b"\0\0\0\0" + data  # zero mask: payload unchanged

def syscw(pid):
    return proc_field(pid, "io", "syscw")

async def count_frames(r, want):
    """Reads server frames until `want` message frames were seen."""
    buf, seen = b"", 0
    while seen < want:
        chunk = await r.read(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed early")
        buf += chunk
        pos = 0
        while len(buf) - pos >= 2:
            n = buf[pos + 1] & 0x7F
            hl = 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                n, hl = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                n, hl = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if len(buf) - pos < hl + n:
                break
            if buf[pos] == 0x81 and buf[pos + hl:pos + hl + 16] == b'{"op":"message",':
                seen += 1
            pos += hl + n
        buf = buf[pos:]
    return seen

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subscribers", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    server, port = start_server(args.shards)
    try:
        subs = [await connect(port, i) for i in range(args.subscribers)]
        for r, w in subs:
            w.write(client_frame('{"op":"subscribe","channel":"fan","ref":1}'))
        for r, w in subs:
            head = await r.readexactly(2)
            await r.readexactly(head[1] & 0x7F)  # ok
        pr, pw = await connect(port, 0)
        readers = [asyncio.create_task(count_frames(r, args.messages)) for r, _ in subs]
        before = syscw(server.pid)
        t0 = time.time()
        payload = json.dumps({"op": "publish", "channel": "fan", "data": {"seq": 0, "pad": "x" * 64}})
        for i in range(args.messages):
            pw.write(client_frame(payload.replace('"seq": 0', f'"seq": {i}')))
            if i % 64 == 63:
                await pw.drain()
        await pw.drain()
        publish_s = time.time() - t0
        counts = await asyncio.wait_for(asyncio.gather(*readers), args.timeout)
        total_s = time.time() - t0
        writes = syscw(server.pid) - before
        delivered = sum(counts)
        print(f"subscribers={args.subscribers} messages={args.messages} shards={args.shards} "
              f"delivered={delivered} publish_seconds={publish_s:.2f} deliver_seconds={total_s:.2f} "
              f"deliveries_per_s={delivered / total_s:.0f} server_write_syscalls={writes} "
              f"write_syscalls_per_delivered_message={writes / delivered:.4f}")
    finally:
        server.terminate()
        server.wait(timeout=30)

asyncio.run(main())
