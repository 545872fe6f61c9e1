/**
 * MX delivery over IPv6 (RFC 5321 §5.1, issue 4), on loopback only: dnsmasq
 * serves an MX for v6.test whose host has just an AAAA record (::1), and one
 * for dual.test whose host has both ::1 and 127.0.0.3. lib/dns/mx.ts lists a
 * host's IPv6 addresses before its IPv4 ones, so with receivers on both
 * addresses dual.test goes to ::1; with nothing listening on ::1, skiff falls
 * back to 127.0.0.3 and v6.test (no IPv4 address) is deferred. The address
 * family used is checked on both sides: the peer address the receiver saw
 * (X-Peer) and skiff's journal relay= ("mx.dual.test[::1]:port").
 *
 * Needs ::1 on the loopback interface: where it is missing the test is
 * reported as ignored with a line saying so (and fails under CI=true, like a
 * missing peer), never passed without having run.
 */
import assert from "node:assert/strict";
import { isIP } from "node:net";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import type { MessageState } from "../lib/spool/records.ts";
import { resolveMx } from "../lib/dns/mx.ts";
import { freePort } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, startDnsmasq, startScripted, testConfig } from "./delivery_peers.ts";

const ZONE = [
  "--mx-host=v6.test,mx.v6.test,10",
  "--host-record=mx.v6.test,::1",
  "--mx-host=dual.test,mx.dual.test,10",
  "--host-record=mx.dual.test,127.0.0.3,::1",
];

/** Why ::1 cannot be used here, or null when a TCP socket binds to it. */
function ipv6LoopbackProblem(): string | null {
  try {
    Deno.listen({ hostname: "::1", port: 0, transport: "tcp" }).close();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

const NAME = "MX delivery over IPv6: AAAA-only MX host, IPv6 first, fallback to IPv4";
const v6Problem = ipv6LoopbackProblem();

/** The relay= of the journal's "delivered" record for a recipient. */
function deliveredRelay(state: MessageState, address: string): string | undefined {
  const r = state.recipients.find((x) => x.address === address);
  const rec = r?.history.find((h) => h.t === "delivered");
  return rec?.t === "delivered" ? rec.relay : undefined;
}

/**
 * What a scripted receiver got, per message and sorted: the recipients and
 * the address family of the client's address as the receiver saw it.
 */
async function received(srv: { messages(): Promise<string[]> }): Promise<string[]> {
  return (await srv.messages()).map((m) => {
    const to = /^X-Envelope-To: (.*)$/m.exec(m)?.[1];
    const peer = /^X-Peer: (.*)$/m.exec(m)?.[1];
    return `${to} over IPv${isIP(peer ?? "")}`;
  }).sort();
}

/** Spools one message per recipient list, runs one queue pass; returns the messages' states. */
async function deliverPass(
  dnsPort: number,
  mxPort: number,
  batches: string[][],
): Promise<MessageState[]> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-v6-" });
  try {
    const cfg = testConfig(dir, `[delivery]\nnameserver = "127.0.0.1:${dnsPort}"\n`);
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const ids: string[] = [];
    for (const to of batches) ids.push(await spoolMessage(spool, { from: "alice@localhost", to }));
    const m = new QueueManager({ config: cfg, spool, net: { mxPort } });
    await m.scan();
    await m.idle();
    await m.stop();
    // Each batch has a "defer..." recipient, so every message stays spooled
    // with its journal (and the relay= of the delivered recipient) readable.
    return await Promise.all(ids.map((id) => spool.load(id)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (v6Problem !== null && Deno.env.get("CI") !== "true") {
  console.error(`IPv6 loopback (::1) unusable here: ${v6Problem} — "${NAME}" not run`);
  Deno.test({ name: NAME, ignore: true, fn: () => {} });
} else {
  peerTest(NAME, [PEERS.dnsmasq, PEERS.aiosmtpd, PEERS.python3], async () => {
    if (v6Problem !== null) {
      throw new Error(`IPv6 loopback (::1) unusable on this machine: ${v6Problem}`);
    }
    const dns = await startDnsmasq(ZONE);
    const port = await freePort();
    const v6 = await startScripted("::1", port);
    const v4 = await startScripted("127.0.0.3", port);
    try {
      const resolver = { nameserver: { host: "127.0.0.1", port: dns.port }, timeoutMs: 10_000 };
      assert.deepEqual((await resolveMx("v6.test", resolver)).map((h) => [h.host, h.address]), [
        ["mx.v6.test", "::1"],
      ]);
      assert.deepEqual((await resolveMx("dual.test", resolver)).map((h) => [h.host, h.address]), [
        ["mx.dual.test", "::1"],
        ["mx.dual.test", "127.0.0.3"],
      ]);

      // 1. Both receivers up: the AAAA-only host and the dual-stack host are
      //    reached over IPv6; the IPv4 receiver sees no connection at all.
      const [onlyV6, dualV6] = await deliverPass(dns.port, port, [
        ["ok@v6.test", "defer@v6.test"],
        ["ok@dual.test", "defer@dual.test"],
      ]);
      assert.equal(deliveredRelay(onlyV6, "ok@v6.test"), `mx.v6.test[::1]:${port}`);
      assert.equal(deliveredRelay(dualV6, "ok@dual.test"), `mx.dual.test[::1]:${port}`);
      assert.deepEqual(await received(v6), ["ok@dual.test over IPv6", "ok@v6.test over IPv6"]);
      assert.deepEqual(await v4.counts(), { connections: 0, messages: 0 });

      // 2. Nothing on [::1]:port: dual.test falls back to 127.0.0.3; v6.test
      //    has no other address and is deferred (4.4.1, connection refused).
      await v6.stop();
      const [dualV4, onlyV6Down] = await deliverPass(dns.port, port, [
        ["ok@dual.test", "defer@dual.test"],
        ["ok@v6.test", "defer@v6.test"],
      ]);
      assert.equal(deliveredRelay(dualV4, "ok@dual.test"), `mx.dual.test[127.0.0.3]:${port}`);
      assert.deepEqual(await received(v4), ["ok@dual.test over IPv4"]);
      assert.deepEqual(
        onlyV6Down.recipients.map((r) => [r.address, r.status, r.dsn]),
        [["ok@v6.test", "deferred", "4.4.1"], ["defer@v6.test", "deferred", "4.4.1"]],
      );
      const last = onlyV6Down.recipients[0].history.at(-1);
      assert.ok(last?.t === "deferred");
      assert.match(last.text, /Connection refused by ::1:\d+/);
      assert.equal(last.relay, `mx.v6.test[::1]:${port}`);
    } finally {
      await dns.stop();
      await v6.stop();
      await v4.stop();
    }
  });
}
