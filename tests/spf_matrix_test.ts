/**
 * SPF (RFC 7208) as skiff evaluates it — mailauth through skiff's bounded
 * resolver — against records served by dnsmasq: pass, fail, softfail,
 * neutral, none, temperror (name server unreachable), permerror (bad
 * record, and more than 10 DNS-querying terms), the HELO identity, and the
 * per-message lookup cap. pyspf (python3-spf) is asked the same questions
 * for three of them, through a private dnsmasq with the same records.
 */
import assert from "node:assert/strict";
import { boundedResolver } from "../lib/mailauth/resolver.ts";
import { verifyMessage } from "../lib/mailauth/verify.ts";
import { startDnsmasq } from "./delivery_peers.ts";
import { AUTH_PEERS, canUnshare, inDnsNamespace, txt } from "./mailauth_peers.ts";
import { peerTest } from "./peers.ts";

const CHAIN = Array.from({ length: 11 }, (_, i) => i + 1);
const RECORDS = [
  "--local=/spf.test/",
  txt("pass.spf.test", "v=spf1 ip4:127.0.0.1 -all"),
  txt("fail.spf.test", "v=spf1 ip4:192.0.2.1 -all"),
  txt("soft.spf.test", "v=spf1 ~all"),
  txt("neutral.spf.test", "v=spf1 ?all"),
  "--host-record=none.spf.test,127.0.0.1",
  txt("perm.spf.test", "v=spf1 frobnicate:x -all"),
  txt("mx.spf.test", "v=spf1 mx -all"),
  "--mx-host=mx.spf.test,mail.spf.test,10",
  "--host-record=mail.spf.test,127.0.0.1",
  txt("helo.spf.test", "v=spf1 a -all"),
  "--host-record=helo.spf.test,127.0.0.1",
  // include:l1 → l2 → … → l11: eleven DNS-querying terms (RFC 7208 §4.6.4 allows 10).
  txt("deep.spf.test", "v=spf1 include:l1.spf.test -all"),
  ...CHAIN.map((i) =>
    txt(`l${i}.spf.test`, i < 11 ? `v=spf1 include:l${i + 1}.spf.test -all` : "v=spf1 +all")
  ),
  txt("nine.spf.test", "v=spf1 include:l3.spf.test -all"),
];

const MESSAGE = new TextEncoder().encode("From: a@spf.test\r\nSubject: spf\r\n\r\nbody\r\n");

async function spfOf(
  port: number,
  o: { sender: string; helo?: string; maxQueries?: number; nameserverPort?: number },
) {
  const { resolve, stats } = boundedResolver({
    nameserver: { host: "127.0.0.1", port: o.nameserverPort ?? port },
    timeoutMs: 3000,
    maxQueries: o.maxQueries ?? 50,
  });
  const v = await verifyMessage(MESSAGE, {
    resolver: resolve,
    authservId: "mx.skiff.test",
    ip: "127.0.0.1",
    helo: o.helo ?? "[127.0.0.1]",
    sender: o.sender,
    dmarc: false,
    minKeyBits: 1024,
    timeoutMs: 3000,
  });
  return { ...v, queries: stats.queries };
}

peerTest("spf matrix: pass, fail, softfail, neutral, none, temperror, permerror, 10-lookup limit", [
  AUTH_PEERS.dnsmasq,
], async (t) => {
  const dns = await startDnsmasq(RECORDS);
  try {
    const cases: [string, string][] = [
      ["u@pass.spf.test", "pass"],
      ["u@fail.spf.test", "fail"],
      ["u@soft.spf.test", "softfail"],
      ["u@neutral.spf.test", "neutral"],
      ["u@none.spf.test", "none"],
      ["u@nx.spf.test", "none"],
      ["u@perm.spf.test", "permerror"],
      ["u@mx.spf.test", "pass"],
      ["u@deep.spf.test", "permerror"],
      ["u@nine.spf.test", "pass"],
    ];
    for (const [sender, want] of cases) {
      await t.step(`${sender} → ${want}`, async () => {
        const v = await spfOf(dns.port, { sender });
        assert.equal(v.spf, want, v.authResults);
        assert.match(v.authResults, new RegExp(`spf=${want} .*smtp\\.mailfrom=${sender}`));
      });
    }
    await t.step("a name server that does not answer gives temperror", async () => {
      const v = await spfOf(dns.port, { sender: "u@pass.spf.test", nameserverPort: 1 });
      assert.equal(v.spf, "temperror");
    });
    await t.step("the HELO identity is checked too", async () => {
      const v = await spfOf(dns.port, { sender: "u@fail.spf.test", helo: "helo.spf.test" });
      assert.equal(v.spf, "fail");
      assert.equal(v.spfHelo, "pass");
      assert.match(v.authResults, /spf=pass smtp\.helo=helo\.spf\.test/);
    });
    await t.step("the per-message lookup cap makes an evaluation temperror", async () => {
      const v = await spfOf(dns.port, { sender: "u@nine.spf.test", maxQueries: 3 });
      assert.equal(v.spf, "temperror");
      assert.ok(v.queries > 3);
    });
  } finally {
    await dns.stop();
  }
});

peerTest("spf matrix: pyspf agrees on pass, fail and softfail", [
  AUTH_PEERS.dnsmasq,
  AUTH_PEERS.pyspf,
  AUTH_PEERS.unshare,
], async () => {
  if (!canUnshare()) return console.error("pyspf cross-check needs root (unshare --net)");
  const dns = await startDnsmasq(RECORDS);
  try {
    for (
      const [sender, want] of [["u@pass.spf.test", "pass"], ["u@fail.spf.test", "fail"], [
        "u@soft.spf.test",
        "softfail",
      ]]
    ) {
      const ours = await spfOf(dns.port, { sender });
      const py = await inDnsNamespace(RECORDS, [
        "/usr/bin/python3",
        "-c",
        `import spf; print(spf.check2(i="127.0.0.1", s="${sender}", h="client.test")[0])`,
      ]);
      assert.equal(py.code, 0, py.out);
      assert.equal(py.out, want);
      assert.equal(ours.spf, py.out);
    }
  } finally {
    await dns.stop();
  }
});
