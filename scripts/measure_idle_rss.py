#!/usr/bin/env python3
"""Measures wsedge's user-space RSS per idle WebSocket connection.

Usage: scripts/measure_idle_rss.py [--connections 10000] [--warmup 2000] [--shards 2] [--binary PATH]
Starts target/release/wsedge on a free port, opens --warmup connections, reads its VmRSS, opens N more protocol-v1 connections
(each reads its welcome and then stays idle), reads VmRSS again, and prints the difference per
connection. Client source addresses cycle over 127.0.0.1-4. Bounded: it exits after measuring.
"""
import argparse, asyncio, time

from wsraw import connect, proc_field, start_server

def rss_kib(pid):
    return proc_field(pid, "status", "VmRSS")

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=10000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2000, help="connections opened before the first reading")
    ap.add_argument("--binary", help="another wsedge build (default target/release/wsedge)")
    args = ap.parse_args()
    server, port = start_server(args.shards, args.binary)
    try:
        held, sem = [], asyncio.Semaphore(200)
        async def open_one(i):
            async with sem:
                held.append(await connect(port, i))
        # Warm up allocator, runtime and tables with a first batch, then measure from there.
        warm = args.warmup
        await asyncio.gather(*(open_one(i) for i in range(warm)))
        await asyncio.sleep(0.5)
        before = rss_kib(server.pid)
        t0 = time.time()
        await asyncio.gather(*(open_one(i) for i in range(warm, warm + args.connections)))
        await asyncio.sleep(1.0)
        after = rss_kib(server.pid)
        n = args.connections
        print(f"connections={n} warmup={warm} shards={args.shards} open_seconds={time.time() - t0:.1f} "
              f"rss_before_kib={before} rss_after_kib={after} "
              f"rss_per_idle_connection_bytes={(after - before) * 1024 / n:.0f}")
        for _, w in held:
            w.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

asyncio.run(main())
