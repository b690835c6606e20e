#!/usr/bin/env python3
"""A hookrelay webhook receiver: Python 3.10+, standard library only.

    WEBHOOK_SECRET=whsec_... python3 receiver.py [PORT]     (default 9000)

Every POST is checked before anything else:
  1. webhook-id, webhook-timestamp and webhook-signature are present (else 400);
  2. the timestamp is within TOLERANCE seconds of now, so a captured request cannot be
     replayed later (else 401);
  3. one of the space-separated `v1,<base64>` signatures (several during a secret
     rotation) equals HMAC-SHA256(key, "<id>.<timestamp>.<raw body>"), key being the
     base64-decoded part of the secret after `whsec_` (else 401).
Then it dedupes on webhook-id (delivery is at-least-once: a retry or replay carries the
same id) and prints one line per event: `verified <id> <type>` the first time,
`duplicate <id>` after. Both answer 200, so hookrelay stops sending.
A real receiver keeps the seen ids where its work is stored (a unique key), in the same
transaction as the work, rather than in memory.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

TOLERANCE = int(os.environ.get("WEBHOOK_TOLERANCE", "300"))  # seconds
SECRET = os.environ["WEBHOOK_SECRET"]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))

seen = set()
seen_lock = threading.Lock()


def verify(headers, body: bytes) -> str | None:
    """None if the request is genuine and fresh, else why not."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not (msg_id and ts and sigs):
        return "missing webhook headers"
    try:
        age = time.time() - int(ts)
    except ValueError:
        return "bad webhook-timestamp"
    if abs(age) > TOLERANCE:
        return f"timestamp {ts} is outside the {TOLERANCE}s tolerance"
    mac = hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(mac).decode()
    if not any(hmac.compare_digest(expected, s) for s in sigs.split(" ")):
        return "no matching signature"
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        why = verify(self.headers, body)
        if why is not None:
            status = 400 if why.startswith(("missing", "bad")) else 401
            print(f"refused {self.headers.get('webhook-id')}: {why}", flush=True)
            self.send_response(status)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        with seen_lock:
            first = msg_id not in seen
            seen.add(msg_id)
        if first:
            event = json.loads(body)
            # ... do the work here ...
            print(f"verified {msg_id} {event['type']}", flush=True)
        else:
            print(f"duplicate {msg_id}", flush=True)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):  # one line per event is printed above
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    host = os.environ.get("HOST", "127.0.0.1")
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    print(f"listening on {host}:{port}", flush=True)
    server.serve_forever()
