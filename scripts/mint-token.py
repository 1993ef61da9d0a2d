#!/usr/bin/env python3
"""Mints an HS256 JWT for wsedge (standard library only).

    scripts/mint-token.py SECRET USER [--ttl SECONDS] [--subscribe PATTERN ...] [--publish PATTERN ...]

SECRET is the server's auth.hs256_secret (WSEDGE_AUTH_HS256_SECRET); USER becomes `sub`; the token
expires after --ttl seconds (default 3600). --subscribe/--publish add the
"wsedge":{"subscribe":[...],"publish":[...]} claim that limits the connection.
"""
import argparse
import base64
import hashlib
import hmac
import json
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("secret")
    p.add_argument("user")
    p.add_argument("--ttl", type=int, default=3600)
    p.add_argument("--subscribe", nargs="*")
    p.add_argument("--publish", nargs="*")
    a = p.parse_args()
    claims = {"sub": a.user, "exp": int(time.time()) + a.ttl}
    if a.subscribe is not None or a.publish is not None:
        claims["wsedge"] = {"subscribe": a.subscribe or [], "publish": a.publish or []}
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(a.secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    print(f"{head}.{body}.{b64(signature)}")


if __name__ == "__main__":
    main()
