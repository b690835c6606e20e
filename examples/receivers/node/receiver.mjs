// A hookrelay webhook receiver: Node 20+, standard library only.
//
//     WEBHOOK_SECRET=whsec_... node receiver.mjs [PORT]      (default 9000)
//
// Every POST is checked before anything else:
//   1. webhook-id, webhook-timestamp and webhook-signature are present (else 400);
//   2. the timestamp is within TOLERANCE seconds of now, so a captured request cannot
//      be replayed later (else 401);
//   3. one of the space-separated `v1,<base64>` signatures (several during a secret
//      rotation) equals HMAC-SHA256(key, "<id>.<timestamp>.<raw body>"), key being the
//      base64-decoded part of the secret after `whsec_` (else 401).
// Then it dedupes on webhook-id (delivery is at-least-once: a retry or replay carries
// the same id) and prints one line per event: `verified <id> <type>` the first time,
// `duplicate <id>` after. Both answer 200, so hookrelay stops sending.
// A real receiver keeps the seen ids where its work is stored (a unique key), in the
// same transaction as the work, rather than in memory.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const TOLERANCE = Number(process.env.WEBHOOK_TOLERANCE ?? 300); // seconds
const KEY = Buffer.from(process.env.WEBHOOK_SECRET.replace(/^whsec_/, ""), "base64");
const seen = new Set();

// null if the request is genuine and fresh, else why not.
function verify(headers, body) {
  const id = headers["webhook-id"];
  const ts = headers["webhook-timestamp"];
  const sigs = headers["webhook-signature"];
  if (!id || !ts || !sigs) return "missing webhook headers";
  if (!/^\d+$/.test(ts)) return "bad webhook-timestamp";
  if (Math.abs(Date.now() / 1000 - Number(ts)) > TOLERANCE) {
    return `timestamp ${ts} is outside the ${TOLERANCE}s tolerance`;
  }
  const mac = createHmac("sha256", KEY).update(`${id}.${ts}.`).update(body).digest();
  const expected = Buffer.from(`v1,${mac.toString("base64")}`);
  const match = sigs.split(" ").some((s) => {
    const given = Buffer.from(s);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  return match ? null : "no matching signature";
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks); // the raw bytes: never re-serialize before verifying
    const why = verify(req.headers, body);
    const id = req.headers["webhook-id"];
    if (why !== null) {
      console.log(`refused ${id}: ${why}`);
      res.writeHead(why.startsWith("missing") || why.startsWith("bad") ? 400 : 401).end();
      return;
    }
    if (seen.has(id)) {
      console.log(`duplicate ${id}`);
    } else {
      seen.add(id);
      const event = JSON.parse(body);
      // ... do the work here ...
      console.log(`verified ${id} ${event.type}`);
    }
    res.writeHead(200).end();
  });
});

const port = Number(process.argv[2] ?? 9000);
const host = process.env.HOST ?? "127.0.0.1";
server.listen(port, host, () => console.log(`listening on ${host}:${port}`));
