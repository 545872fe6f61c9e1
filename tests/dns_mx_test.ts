/**
 * lib/dns/mx.ts against a scripted UDP name server on loopback: a lookup
 * lasts the configured timeout, not only Deno.resolveDns's own two tries of
 * about a second (after which it throws TimedOut).
 */
import assert from "node:assert/strict";
import * as dgram from "node:dgram";
import { resolveMx } from "../lib/dns/mx.ts";
import { DeliveryError } from "../lib/mail/delivery_error.ts";

/** Answers NXDOMAIN to every query after ignoring the first `drop` packets. */
async function silentThenNx(drop: number) {
  const sock = dgram.createSocket("udp4");
  let seen = 0;
  sock.on("message", (q, from) => {
    if (++seen <= drop || q.length < 12) return;
    let end = 12; // the question: QNAME labels, then QTYPE and QCLASS
    while (end < q.length && q[end] !== 0) end += q[end] + 1;
    const question = q.subarray(12, end + 5);
    const header = Buffer.from([q[0], q[1], 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
    sock.send(Buffer.concat([header, question]), from.port, from.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    port: sock.address().port,
    seen: () => seen,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
}

Deno.test("a DNS answer after Deno's own resolver timeout still counts within dns_timeout", async () => {
  // Deno.resolveDns sends a query twice, then throws TimedOut; the third
  // packet (skiff's second call) gets the answer: NXDOMAIN for MX, A and AAAA.
  const ns = await silentThenNx(2);
  try {
    const err = await resolveMx("nx.test", {
      nameserver: { host: "127.0.0.1", port: ns.port },
      timeoutMs: 20_000,
    }).then(() => null, (e) => e);
    assert.ok(err instanceof DeliveryError, String(err));
    // Permanent "not found", not the temporary 4.4.3 of a lookup given up early.
    assert.equal(err.dsn, "5.1.2", err.message);
    assert.ok(err.permanent);
    assert.ok(ns.seen() >= 5, `queries seen: ${ns.seen()}`); // 2 dropped + MX, A, AAAA
  } finally {
    await ns.close();
  }
});
