/**
 * The delivery engine against real peers, driven through the QueueManager
 * with an injectable clock: MX routing from dnsmasq (preference order, next
 * MX on a refused connection, implicit MX, null MX, unknown domain),
 * per-recipient results from a scripted aiosmtpd server (deferral, partial
 * failure, expiry, RFC 3464 bounces, none for the null sender), and the
 * connection cache on a burst of 60 messages. Everything stays on 127.x.
 */
import assert from "node:assert/strict";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import { resolveMx } from "../lib/dns/mx.ts";
import { maildirFiles } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, startDnsmasq, startScripted, testConfig } from "./delivery_peers.ts";

const ZONE = [
  "--mx-host=mx.test,mx1.mx.test,10",
  "--mx-host=mx.test,mx2.mx.test,20",
  "--host-record=mx1.mx.test,127.0.0.2",
  "--host-record=mx2.mx.test,127.0.0.3",
  "--host-record=implicit.test,127.0.0.3",
  // RFC 7505 null MX: preference 0, exchange "." (the root).
  "--dns-rr=null.test,15,000000",
];

async function mailText(dir: string, user: string): Promise<string[]> {
  const files = await maildirFiles(`${dir}/mail/${user}`);
  return await Promise.all(files.map((f) => Deno.readTextFile(f)));
}

peerTest(
  "MX delivery via dnsmasq: preference, next MX, implicit MX, null MX, unknown domain, bounce",
  [PEERS.dnsmasq, PEERS.aiosmtpd, PEERS.python3],
  async () => {
    const dns = await startDnsmasq(ZONE);
    const mx2 = await startScripted("127.0.0.3");
    const implicit = mx2; // implicit.test is 127.0.0.3 too
    const dir = await Deno.makeTempDir({ prefix: "skiff-mx-" });
    try {
      const resolver = { nameserver: { host: "127.0.0.1", port: dns.port }, timeoutMs: 10_000 };
      const hosts = await resolveMx("mx.test", resolver);
      assert.deepEqual(hosts.map((h) => [h.host, h.address]), [
        ["mx1.mx.test", "127.0.0.2"],
        ["mx2.mx.test", "127.0.0.3"],
      ]);
      await assert.rejects(resolveMx("null.test", resolver), /null MX/);
      await assert.rejects(resolveMx("nx.test", resolver), /not found/);

      const cfg = testConfig(dir, `[delivery]\nnameserver = "127.0.0.1:${dns.port}"\n`);
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const id = await spoolMessage(spool, {
        from: "alice@localhost",
        to: ["ok@mx.test", "ok@implicit.test", "x@null.test", "y@nx.test"],
      });
      // mx1 (127.0.0.2) has nothing on the port: refused, so mx2 takes it.
      const m = new QueueManager({ config: cfg, spool, net: { mxPort: mx2.port } });
      await m.scan();
      await m.idle();
      await m.stop();
      assert.equal((await implicit.counts()).messages, 2);
      const bounces = await mailText(dir, "alice");
      assert.equal(bounces.length, 1);
      const b = bounces[0];
      assert.match(b, /^Return-Path: <>$/m);
      assert.match(b, /Content-Type: multipart\/report; report-type=delivery-status;/);
      assert.match(b, /Final-Recipient: rfc822; x@null\.test\nAction: failed\nStatus: 5\.1\.10/);
      assert.match(b, /Final-Recipient: rfc822; y@nx\.test\nAction: failed\nStatus: 5\.1\.2/);
      assert.doesNotMatch(b, /ok@mx\.test\nAction/);
      assert.match(b, /Content-Type: message\/rfc822/);
      assert.deepEqual(await spool.list(), []);
      assert.ok(!(await spool.list()).includes(id));
    } finally {
      await dns.stop();
      await mx2.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "per-recipient 4xx/5xx from aiosmtpd: partial failure, bounce, expiry, no bounce for <>",
  [PEERS.aiosmtpd, PEERS.python3],
  async () => {
    const srv = await startScripted();
    const dir = await Deno.makeTempDir({ prefix: "skiff-rcpt-" });
    try {
      const cfg = testConfig(
        dir,
        `[delivery]\ndelay_warning = 100\n[[route]]\ndomain = "scripted.test"\ntype = "smtp"\nhost = "127.0.0.1:${srv.port}"\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      let now = Date.now();
      const t0 = now;
      const id = await spoolMessage(
        spool,
        {
          from: "alice@localhost",
          to: ["ok@scripted.test", "defer@scripted.test", "reject@scripted.test"],
          params: { RET: "HDRS", ENVID: "env-1" },
        },
        "Subject: partial\r\n\r\nbody line\r\n",
        now,
      );
      const nullId = await spoolMessage(spool, { from: "", to: ["reject2@scripted.test"] });
      const run = async () => {
        const m = new QueueManager({ config: cfg, spool, now: () => now });
        await m.scan();
        await m.idle();
        await m.stop();
      };
      await run();
      const state = await spool.load(id);
      assert.deepEqual(state.recipients.map((r) => [r.status, r.dsn]), [
        ["delivered", "2.0.0"],
        ["deferred", "4.2.1"],
        ["failed", "5.1.1"],
      ]);
      assert.ok(!(await spool.list()).includes(nullId), "null-sender message finished");
      let bounces = await mailText(dir, "alice");
      assert.equal(bounces.length, 1, "one bounce, none for the null sender");
      assert.match(bounces[0], /Final-Recipient: rfc822; reject@scripted\.test/);
      assert.match(bounces[0], /Diagnostic-Code: smtp; 550 5\.1\.1 No such user here/);
      assert.match(bounces[0], /Original-Envelope-Id: env-1/);
      // RET=HDRS: the original's header only.
      assert.match(bounces[0], /Content-Type: text\/rfc822-headers/);
      assert.doesNotMatch(bounces[0], /body line/);
      assert.equal(await srv.counts().then((c) => c.messages), 1);

      // After delay_warning (100 s), the next pass warns about the deferred one.
      now = t0 + 200_000;
      await run();
      bounces = await mailText(dir, "alice");
      assert.equal(bounces.length, 2);
      const warn = bounces.find((b) => /Action: delayed/.test(b));
      assert.ok(warn, "a delay warning");
      assert.match(
        warn!,
        /Final-Recipient: rfc822; defer@scripted\.test\nAction: delayed\nStatus: 4\.2\.1/,
      );

      // Past the lifetime, the deferred recipient fails with 4.4.7 → bounced as 5.4.7.
      now = t0 + cfg.queue.lifetime * 1000 + 1000;
      await run();
      bounces = await mailText(dir, "alice");
      assert.equal(bounces.length, 3);
      assert.ok(
        bounces.some((b) => /defer@scripted\.test\nAction: failed\nStatus: 5\.4\.7/.test(b)),
      );
      assert.deepEqual(await spool.list(), []);
    } finally {
      await srv.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "a burst of 60 messages to one destination reuses cached connections",
  [PEERS.aiosmtpd, PEERS.python3],
  async () => {
    // Enough to show reuse (at most cache_size connections for three times as
    // many messages); throughput figures are scripts/bench.ts's job.
    const BURST = 60;
    const figures: string[] = [];
    for (const cacheSize of [0, 20]) {
      const srv = await startScripted();
      const dir = await Deno.makeTempDir({ prefix: "skiff-burst-" });
      try {
        const cfg = testConfig(
          dir,
          `[delivery]\ncache_size = ${cacheSize}\nconcurrency = 10\n` +
            `[[route]]\ndomain = "burst.test"\ntype = "smtp"\nhost = "127.0.0.1:${srv.port}"\n`,
        );
        const spool = new Spool(cfg.spoolDir);
        await spool.init();
        for (let i = 0; i < BURST; i++) {
          await spoolMessage(spool, { from: "alice@localhost", to: [`r${i}@burst.test`] });
        }
        const m = new QueueManager({ config: cfg, spool });
        const started = performance.now();
        await m.scan();
        await m.idle();
        const ms = performance.now() - started;
        const stats = { ...m.connectionCache.stats };
        await m.stop();
        const c = await srv.counts();
        assert.equal(c.messages, BURST);
        assert.deepEqual(await spool.list(), []);
        if (cacheSize === 0) assert.equal(c.connections, BURST);
        else assert.ok(c.connections <= 20, `connections with the cache: ${c.connections}`);
        figures.push(
          `cache_size=${cacheSize}: ${c.connections} connections, ${Math.round(ms)} ms ` +
            `(${Math.round(BURST * 1000 / ms)} msg/s), cache hits ${stats.hits}`,
        );
      } finally {
        await srv.stop();
        await Deno.remove(dir, { recursive: true });
      }
    }
    console.log(`burst of ${BURST}: ${figures.join("; ")}`);
  },
);
