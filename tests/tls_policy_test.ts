/**
 * Outbound transport security against real peers on loopback: a receiving
 * `skiff serve` with STARTTLS listeners on 127.0.0.2 (certificate for its
 * MX names, signed by a test CA), 127.0.0.3 (a certificate for another
 * name) and a plaintext-only listener on 127.0.0.4, all on one port;
 * dnsmasq serving MX, A and TXT records (MTA-STS, TLS-RPT); a Deno HTTPS
 * server publishing MTA-STS policies; a DNS stub setting the AD bit for
 * DANE. A QueueManager in this process is the sender.
 */
import assert from "node:assert/strict";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import { maildirFiles, RawClient, runSkiff, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, startDnsmasq, testConfig } from "./delivery_peers.ts";
import {
  dnsStub,
  makeCa,
  makeLeaf,
  policyServer,
  tlsaEeSpki,
  tlsaTaCert,
} from "./tls_policy_peers.ts";
import { parseStsPolicy, StsError } from "../lib/tlspolicy/mta_sts.ts";
import { TlsPolicy } from "../lib/tlspolicy/policy.ts";
import { StsCache } from "../lib/tlspolicy/sts_cache.ts";
import { describeConfig, parseConfig } from "../lib/config/load.ts";

/**
 * The receiver: good-cert MX on 127.0.0.2, wrong-cert MX on 127.0.0.3, plaintext on 127.0.0.4,
 * and the good certificate with its CA (a chain, for DANE-TA) on 127.0.0.5.
 */
async function receiver(dir: string, domains: string[]) {
  await Deno.writeTextFile(
    `${dir}/chain.pem`,
    (await Deno.readTextFile(`${dir}/good.pem`)) + (await Deno.readTextFile(`${dir}/ca.pem`)),
  );
  await Deno.copyFile(`${dir}/good.key`, `${dir}/chain.key`);
  const port = findPort();
  const l = (ip: string, cert: string) =>
    `[[listener]]\naddress = "${ip}:${port}"\n` +
    (cert
      ? `tls = "starttls"\ntls_cert = "${dir}/${cert}.pem"\ntls_key = "${dir}/${cert}.key"\n`
      : "");
  const server = await SkiffServer.start({
    dir,
    top: "relay_networks = []",
    domains: ["localhost", ...domains],
    toml: l("127.0.0.2", "good") + l("127.0.0.3", "wrong") + l("127.0.0.4", "") +
      l("127.0.0.5", "chain"),
  });
  return { server, port };
}

/** A port free on 127.0.0.2-5 (the receiver binds it on all four). */
function findPort(): number {
  for (let i = 0; i < 20; i++) {
    const l = Deno.listen({ hostname: "127.0.0.2", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    try {
      for (const ip of ["127.0.0.3", "127.0.0.4", "127.0.0.5"]) {
        Deno.listen({ hostname: ip, port }).close();
      }
      return port;
    } catch { /* taken: another */ }
  }
  throw new Error("No free port on 127.0.0.2-5");
}

const mail = async (rxDir: string, user: string) => {
  const files = await maildirFiles(`${rxDir}/mail/${user}`).catch(() => []);
  return await Promise.all(files.map((f) => Deno.readTextFile(f)));
};

const POLICY = (mode: string, mx: string[]) =>
  `version: STSv1\r\nmode: ${mode}\r\n${mx.map((m) => `mx: ${m}\r\n`).join("")}max_age: 604800\r\n`;

peerTest(
  "MTA-STS enforce defers an MX with a wrong certificate or not in the policy, delivers to a listed verified MX; REQUIRETLS bounces on a plaintext hop; TLS-RPT reports written and sent",
  [PEERS.openssl, PEERS.dnsmasq],
  async () => {
    const rxDir = await Deno.makeTempDir({ prefix: "skiff-tlspol-rx-" });
    const dir = await Deno.makeTempDir({ prefix: "skiff-tlspol-tx-" });
    await makeCa(rxDir);
    await makeLeaf(rxDir, "good", ["mx.good.test", "mx.unlisted.test", "mx.req-ok.test"]);
    await makeLeaf(rxDir, "wrong", ["other.example"]);
    const stsNames = ["good", "badcert", "unlisted", "testing"].map((d) => `mta-sts.${d}.test`);
    await makeLeaf(rxDir, "https", stsNames);
    const domains = [
      "good.test",
      "badcert.test",
      "unlisted.test",
      "testing.test",
      "req-plain.test",
      "req-ok.test",
    ];
    const rx = await receiver(rxDir, domains);
    const https = policyServer(
      await Deno.readTextFile(`${rxDir}/https.pem`),
      await Deno.readTextFile(`${rxDir}/https.key`),
      {
        "mta-sts.good.test": POLICY("enforce", ["*.good.test"]),
        "mta-sts.badcert.test": POLICY("enforce", ["mx.badcert.test"]),
        "mta-sts.unlisted.test": POLICY("enforce", ["mx.elsewhere.test"]),
        "mta-sts.testing.test": POLICY("testing", ["mx.testing.test"]),
      },
    );
    const dnsArgs = [
      ["good", "127.0.0.2"],
      ["badcert", "127.0.0.3"],
      ["unlisted", "127.0.0.2"],
      ["testing", "127.0.0.3"],
      ["req-plain", "127.0.0.4"],
      ["req-ok", "127.0.0.2"],
    ].flatMap(([d, ip]) => [
      `--mx-host=${d}.test,mx.${d}.test,10`,
      `--host-record=mx.${d}.test,${ip}`,
      `--host-record=mta-sts.${d}.test,127.0.0.1`,
    ]);
    for (const d of ["good", "badcert", "unlisted", "testing"]) {
      dnsArgs.push(`--txt-record=_mta-sts.${d}.test,v=STSv1; id=20261202`);
    }
    dnsArgs.push("--txt-record=_smtp._tls.good.test,v=TLSRPTv1; rua=mailto:tlsrpt@good.test");
    const dns = await startDnsmasq(dnsArgs);
    let m: QueueManager | null = null;
    try {
      const cfg = testConfig(
        dir,
        `[relay]\nconnect_timeout = 5\nreply_timeout = 10\n[delivery]\nnameserver = "127.0.0.1:${dns.port}"\n` +
          `dns_timeout = 5\nmta_sts_ca_file = "${rxDir}/ca.pem"\ntls_ca_file = "${rxDir}/ca.pem"\n` +
          `tls_rpt = "send"\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const plain = await spoolMessage(spool, {
        from: "alice@localhost",
        to: [
          "good@good.test",
          "badcert@badcert.test",
          "unlisted@unlisted.test",
          "testing@testing.test",
        ],
      }, "Subject: mta-sts\r\n\r\nhello\r\n");
      const req = await spoolMessage(spool, {
        from: "alice@localhost",
        to: ["plain@req-plain.test", "ok@req-ok.test"],
        params: { REQUIRETLS: "yes" },
      }, "Subject: requiretls\r\n\r\nsecret\r\n");
      const net = { mxPort: rx.port, mtaStsPort: https.port };
      m = new QueueManager({ config: cfg, spool, net });
      await m.scan();
      await m.idle();
      await m.stop();
      m = null;

      const s1 = await spool.load(plain);
      const by = Object.fromEntries(s1.recipients.map((r) => [r.address.split("@")[0], r]));
      const show = JSON.stringify(s1.recipients, null, 1) + `\nreceiver:\n${rx.server.log}`;
      // enforce + listed MX + verified certificate: delivered.
      assert.equal(by.good.status, "delivered", show);
      await waitFor(async () => (await mail(rxDir, "good"))[0], 15_000, "good's mail");
      // enforce, listed MX, certificate for another name: deferred, nothing sent.
      assert.equal(by.badcert.status, "deferred", show);
      assert.equal(by.badcert.dsn, "4.7.5", show);
      assert.match(by.badcert.text ?? "", /Server certificate not verified/, show);
      // enforce, MX not in the policy: deferred with the reason, nothing sent.
      assert.equal(by.unlisted.status, "deferred", show);
      assert.match(
        by.unlisted.text ?? "",
        /mx\.unlisted\.test is not listed in the MTA-STS policy/,
      );
      // testing: reports only, so the wrong certificate still gets the mail.
      assert.equal(by.testing.status, "delivered", show);
      assert.deepEqual(await mail(rxDir, "badcert"), []);
      assert.deepEqual(await mail(rxDir, "unlisted"), []);

      // REQUIRETLS: the plaintext-only hop fails 5.7.30 (bounced), the verified one delivers.
      // (the message is settled for every recipient, so it has left the spool)
      await assert.rejects(() => spool.load(req));
      assert.deepEqual(await mail(rxDir, "plain"), []);
      const bounce = await waitFor(async () => (await mail(dir, "alice"))[0], 15_000, "bounce");
      assert.match(bounce, /5\.7\.30/);
      assert.match(bounce, /plain@req-plain\.test/);
      // Only the header of a REQUIRETLS message comes back: the bounce may go out in clear.
      assert.match(bounce, /Subject: requiretls/);
      assert.doesNotMatch(bounce, /secret/);
      assert.match(bounce, /REQUIRETLS: TLS is required, but was not offered/);
      assert.doesNotMatch(bounce, /Final-Recipient: rfc822; ?ok@req-ok\.test/);
      // The receiver took MAIL ... REQUIRETLS under TLS and kept it with the message.
      await waitFor(async () => (await mail(rxDir, "ok"))[0], 15_000, "ok's mail");

      // The policy cache survives a restart: with the HTTPS server gone, the
      // unlisted MX is still refused.
      // `skiff route`'s explanation: the policy per MX host and its source.
      const explainer = new TlsPolicy({
        config: { ...cfg.delivery.tlsPolicy, tlsRpt: "off" },
        resolver: { nameserver: cfg.delivery.nameserver, timeoutMs: 5000 },
        spoolDir: cfg.spoolDir,
        hostname: cfg.hostname,
      });
      assert.deepEqual(await explainer.explain("good.test", "may", ["mx.good.test"]), [
        "  tls mx.good.test: verify (mta-sts enforce (id 20261202))",
      ]);
      assert.match(
        (await explainer.explain("unlisted.test", "may", ["mx.unlisted.test"]))[0],
        /^ {2}tls mx\.unlisted\.test: refused \(mta-sts enforce .*\): MX host mx\.unlisted\.test is not listed/,
      );
      // An explicit route tls = "none" overrides (and is said to).
      assert.match(
        (await explainer.explain("good.test", "none", ["mx.good.test"]))[0],
        /: none \(route tls = none \(operator override\)\)/,
      );
      const cache = JSON.parse(await Deno.readTextFile(`${cfg.spoolDir}/mta-sts-cache.json`));
      assert.deepEqual(Object.keys(cache).sort(), [
        "badcert.test",
        "good.test",
        "testing.test",
        "unlisted.test",
      ]);
      await https.stop();
      const again = await spoolMessage(spool, { from: "alice@localhost", to: ["x@unlisted.test"] });
      // The next day: the reports of today are written (and mailed) when the manager starts.
      const tomorrow = Date.now() + 86_400_000;
      m = new QueueManager({ config: cfg, spool, net, now: () => tomorrow });
      const reports = `${cfg.spoolDir}/tls-rpt`;
      const day = new Date().toISOString().slice(0, 10);
      const read = async (d: string) =>
        JSON.parse(await Deno.readTextFile(`${reports}/${day}_${d}_skiff.test.json`));
      const good = await waitFor(() => read("good.test").catch(() => null), 15_000, "report");
      await m.scan();
      await m.idle();
      const s3 = await spool.load(again);
      assert.equal(s3.recipients[0].status, "deferred");
      assert.match(s3.recipients[0].text ?? "", /not listed in the MTA-STS policy/);

      assert.equal(good.policies[0].policy["policy-type"], "sts");
      assert.deepEqual(good.policies[0].policy["mx-host"], ["*.good.test"]);
      assert.equal(good.policies[0].summary["total-successful-session-count"], 1);
      const testing = await read("testing.test");
      assert.equal(testing.policies[0].summary["total-failure-session-count"], 1);
      assert.equal(
        testing.policies[0]["failure-details"][0]["result-type"],
        "certificate-host-mismatch",
      );
      const badcert = await read("badcert.test");
      assert.equal(
        badcert.policies[0]["failure-details"][0]["receiving-mx-hostname"],
        "mx.badcert.test",
      );
      // tls_rpt = "send": good.test publishes a rua, so its report was mailed there.
      const sent = await waitFor(
        async () => (await mail(rxDir, "tlsrpt"))[0],
        20_000,
        "report mail",
      );
      assert.match(sent, /TLS-Report-Domain: good\.test/);
      assert.match(sent, /report-type="tlsrpt"/);
    } finally {
      await m?.stop();
      await https.stop().catch(() => {});
      await dns.stop();
      await rx.server.stop();
      await rx.server.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

peerTest(
  "DANE-EE: a matching TLSA record delivers despite a certificate for another name, a mismatch defers with the reason; DANE-TA checks chain and name; TLS-Required: No relaxes DANE",
  [PEERS.openssl],
  async () => {
    const rxDir = await Deno.makeTempDir({ prefix: "skiff-dane-rx-" });
    const dir = await Deno.makeTempDir({ prefix: "skiff-dane-tx-" });
    await makeCa(rxDir);
    await makeLeaf(rxDir, "good", ["mx.good.test"]);
    await makeLeaf(rxDir, "wrong", ["other.example"]);
    const domains = ["dane-ok.test", "dane-bad.test", "dane-ta.test", "dane-ta-bad.test"];
    const rx = await receiver(rxDir, domains);
    const wrongTlsa = tlsaEeSpki(await Deno.readTextFile(`${rxDir}/wrong.pem`));
    const caTlsa = tlsaTaCert(await Deno.readTextFile(`${rxDir}/ca.pem`));
    const dns = await dnsStub({
      mx: {
        "dane-ok.test": "mx.dane-ok.test",
        "dane-bad.test": "mx.dane-bad.test",
        "dane-ta.test": "mx.good.test",
        "dane-ta-bad.test": "mx.ta-wrong.test",
      },
      // dane-ok's MX presents the "wrong" certificate, which its TLSA record pins.
      a: {
        "mx.dane-ok.test": "127.0.0.3",
        "mx.dane-bad.test": "127.0.0.2",
        "mx.good.test": "127.0.0.5",
        "mx.ta-wrong.test": "127.0.0.5",
      },
      tlsa: {
        "_25._tcp.mx.dane-ok.test": [wrongTlsa],
        "_25._tcp.mx.dane-bad.test": [wrongTlsa],
        "_25._tcp.mx.good.test": [caTlsa],
        "_25._tcp.mx.ta-wrong.test": [caTlsa],
      },
    });
    let m: QueueManager | null = null;
    try {
      const cfg = testConfig(
        dir,
        `[relay]\nconnect_timeout = 5\nreply_timeout = 10\n[delivery]\nnameserver = "127.0.0.1:${dns.port}"\ndns_timeout = 5\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const id = await spoolMessage(spool, {
        from: "alice@localhost",
        to: ["ok@dane-ok.test", "bad@dane-bad.test", "ta@dane-ta.test", "tabad@dane-ta-bad.test"],
      });
      const optional = await spoolMessage(spool, {
        from: "alice@localhost",
        to: ["optional@dane-bad.test"],
      }, "Subject: broken DANE\r\nTLS-Required: No\r\n\r\nyour TLSA record is wrong\r\n");
      m = new QueueManager({ config: cfg, spool, net: { mxPort: rx.port } });
      await m.scan();
      await m.idle();
      const s = await spool.load(id);
      const by = Object.fromEntries(s.recipients.map((r) => [r.address.split("@")[0], r]));
      const show = JSON.stringify(s.recipients, null, 1);
      assert.equal(by.ok.status, "delivered", show);
      assert.equal(by.bad.status, "deferred", show);
      assert.equal(by.bad.dsn, "4.7.5", show);
      assert.match(by.bad.text ?? "", /DANE: no TLSA record matches the certificate/, show);
      // DANE-TA: the chain up to the pinned CA and the MX name match.
      assert.equal(by.ta.status, "delivered", show);
      // DANE-TA with a certificate naming neither the MX host nor the domain.
      assert.equal(by.tabad.status, "deferred", show);
      assert.match(
        by.tabad.text ?? "",
        /DANE: the certificate names none of mx\.ta-wrong\.test/,
        show,
      );
      await waitFor(async () => (await mail(rxDir, "ok"))[0], 15_000, "ok's mail");
      await waitFor(async () => (await mail(rxDir, "ta"))[0], 15_000, "ta's mail");
      assert.deepEqual(await mail(rxDir, "bad"), []);
      assert.deepEqual(await mail(rxDir, "tabad"), []);
      // TLS-Required: No (RFC 8689 §4.2.2): the same broken DANE MX gets this one.
      await waitFor(async () => (await mail(rxDir, "optional"))[0], 15_000, "optional's mail");
      await assert.rejects(() => spool.load(optional));

      // `skiff route` names the policy and its source per MX host.
      await Deno.writeTextFile(
        `${dir}/skiff.toml`,
        `spool_dir = "${dir}/spool"\n[delivery]\nnameserver = "127.0.0.1:${dns.port}"\ndns_timeout = 5\n`,
      );
      const out = await runSkiff(["--config", `${dir}/skiff.toml`, "route", "x@dane-ok.test"]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, /mx 10 mx\.dane-ok\.test 127\.0\.0\.3/, out.stdout);
      assert.match(out.stdout, /tls mx\.dane-ok\.test: require \(dane\)/, out.stdout);
    } finally {
      await m?.stop();
      await dns.stop();
      await rx.server.stop();
      await rx.server.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

Deno.test("REQUIRETLS: offered only under TLS, refused (530 5.7.10) in a plaintext session", async () => {
  const server = await SkiffServer.start({ top: "relay_networks = []" });
  try {
    const c = await RawClient.connect(server.port);
    const say = async (line: string) => {
      await c.line(line);
      return (await c.reply())?.join("\n") ?? "";
    };
    await c.reply();
    assert.doesNotMatch(await say("EHLO client.test"), /REQUIRETLS/);
    assert.match(await say("MAIL FROM:<a@localhost> REQUIRETLS"), /^530 5\.7\.10 /);
    assert.match(await say("MAIL FROM:<a@localhost> REQUIRETLS=1"), /^501 /);
    c.close();
  } finally {
    await server.stop();
    await server.cleanup();
  }
});

Deno.test("MTA-STS policy parser: modes, mx patterns, max_age bound, strictness", () => {
  const p = parseStsPolicy(
    "version: STSv1\nmode: enforce\nmx: MX1.Example.org.\nmx: *.example.net\nmax_age: 604800\n",
  );
  assert.deepEqual([p.mode, p.mx, p.maxAge], [
    "enforce",
    ["mx1.example.org", "*.example.net"],
    604800,
  ]);
  for (
    const bad of [
      "mode: enforce\nmx: a.b\nmax_age: 1\n", // no version
      "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
      "version: STSv1\nmode: enforce\nmax_age: 1\n", // no mx
      "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n",
      "version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
      "version: STSv1\nmode: enforce\nmx a.b\nmax_age: 1\n",
    ]
  ) {
    assert.throws(() => parseStsPolicy(bad), StsError, bad);
  }
});

Deno.test("check-config says DANE is off without a configured nameserver; tls policy keys are checked", () => {
  const off = describeConfig(parseConfig(`[delivery]\ndane = "on"\n`, "t.toml"));
  assert.match(off, /DANE is off: it needs delivery.nameserver/);
  const on = describeConfig(parseConfig(`[delivery]\nnameserver = "127.0.0.1:53"\n`, "t.toml"));
  assert.doesNotMatch(on, /DANE is off/);
  assert.match(on, /mta_sts = "on"/);
  assert.throws(
    () => parseConfig(`[delivery]\nmta_sts = "yes"\n`, "t.toml"),
    /delivery\.mta_sts/,
  );
  assert.throws(() => parseConfig(`[delivery]\ntls_rpt = "mail"\n`, "t.toml"), /delivery\.tls_rpt/);
});

peerTest(
  "MTA-STS cache: a new TXT id refetches, a vanished TXT keeps the cached policy until max_age, the cache survives a restart; redirects, wrong types and oversized policies are refused",
  [PEERS.openssl],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-stscache-" });
    await makeCa(dir);
    const hosts = ["ok", "moved", "html", "huge", "untrusted"].map((d) => `mta-sts.${d}.test`);
    await makeLeaf(dir, "https", hosts);
    const policies: Record<string, string | (() => Response)> = {
      "mta-sts.ok.test": POLICY("testing", ["mx.ok.test"]),
      "mta-sts.moved.test": () =>
        new Response("", {
          status: 301,
          headers: { location: "https://mta-sts.ok.test/.well-known/mta-sts.txt" },
        }),
      "mta-sts.html.test": () =>
        new Response(POLICY("enforce", ["mx.html.test"]), {
          headers: { "content-type": "text/html" },
        }),
      "mta-sts.huge.test": POLICY("enforce", ["mx.huge.test"]) + "#".repeat(70 * 1024) + "\r\n",
    };
    const https = policyServer(
      await Deno.readTextFile(`${dir}/https.pem`),
      await Deno.readTextFile(`${dir}/https.key`),
      policies,
    );
    let id = "one";
    let now = Date.now();
    let txtGone = false;
    const src = {
      txt: (name: string) => Promise.resolve(txtGone ? [] : [`v=STSv1; id=${id}`, `name=${name}`]),
      addresses: () => Promise.resolve(["127.0.0.1"]),
      port: https.port,
      timeoutMs: 5000,
      ca: async () => [await Deno.readTextFile(`${dir}/ca.pem`)],
      now: () => now,
    };
    try {
      const cache = new StsCache(`${dir}/cache.json`, src);
      const first = await cache.lookup("ok.test");
      assert.equal(first.policy?.policy.mode, "testing");
      assert.equal(https.hits.length, 1);
      await cache.lookup("ok.test");
      assert.equal(https.hits.length, 1, "same id: no refetch");
      // A new id (seen once the TXT answer's reuse time is over) refetches.
      policies["mta-sts.ok.test"] = POLICY("enforce", ["mx.ok.test"]);
      id = "two";
      now += 301_000;
      const second = await cache.lookup("ok.test");
      assert.equal(https.hits.length, 2);
      assert.equal(second.policy?.policy.mode, "enforce");
      assert.equal(second.policy?.id, "two");
      // A restart reads the durable cache; the TXT record vanishing keeps the policy.
      txtGone = true;
      now += 301_000;
      const restarted = new StsCache(`${dir}/cache.json`, src);
      assert.equal((await restarted.lookup("ok.test")).policy?.policy.mode, "enforce");
      assert.equal(https.hits.length, 2);
      // ... until its max_age is over.
      now += 604_800_000;
      assert.equal((await restarted.lookup("ok.test")).policy, null);
      txtGone = false;

      const kind = async (domain: string) => (await cache.lookup(domain)).error?.kind;
      assert.equal(await kind("moved.test"), "sts-policy-fetch-error"); // no redirect followed
      assert.equal(await kind("html.test"), "sts-policy-invalid");
      assert.equal(await kind("huge.test"), "sts-policy-invalid");
      // A certificate not trusted for the policy host: the system roots do not know the test CA.
      const strict = new StsCache(`${dir}/cache2.json`, {
        ...src,
        ca: () => Promise.resolve(undefined),
      });
      assert.equal((await strict.lookup("untrusted.test")).error?.kind, "sts-webpki-invalid");
      assert.ok(
        !https.hits.some((h) =>
          h.startsWith("mta-sts.ok.test") && h !== "mta-sts.ok.test/.well-known/mta-sts.txt"
        ),
      );
    } finally {
      await https.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);
