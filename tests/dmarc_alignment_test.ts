/**
 * DMARC (RFC 7489 §3.1, §6.6) as skiff evaluates it, against records served
 * by dnsmasq: pass through aligned SPF, pass through aligned DKIM (signed by
 * skiff's own signer) with unaligned SPF, fail when SPF and DKIM pass only
 * for other domains, fail with nothing passing, and none for a From domain
 * without a DMARC record; the published policy is reported with each. And
 * what over-signing From buys: a From added above the signed one breaks
 * skiff's signature, so it cannot turn a passing message into one that
 * shows another author.
 */
import assert from "node:assert/strict";
import { boundedResolver } from "../lib/mailauth/resolver.ts";
import { asLatin1, parseHeaderSection } from "../lib/mailauth/headers.ts";
import { dkimKey } from "../lib/mailauth/keys.ts";
import { bodyHash, dkimSignature } from "../lib/mailauth/sign.ts";
import { verifyMessage } from "../lib/mailauth/verify.ts";
import { startDnsmasq } from "./delivery_peers.ts";
import { AUTH_PEERS, keygen, keyRecord, txt } from "./mailauth_peers.ts";
import { peerTest } from "./peers.ts";

const enc = new TextEncoder();

peerTest("dmarc: pass/fail/none with aligned and unaligned identities", [
  AUTH_PEERS.dnsmasq,
], async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-dmarc-" });
  const own = await keygen(dir, { domain: "org.test", selector: "s1", type: "ed25519" });
  const other = await keygen(dir, { domain: "third.test", selector: "s1", type: "rsa" });
  const dns = await startDnsmasq([
    "--local=/test/",
    keyRecord(own),
    keyRecord(other),
    txt("org.test", "v=spf1 ip4:127.0.0.1 -all"),
    txt("_dmarc.org.test", "v=DMARC1; p=reject; adkim=r; aspf=r"),
    txt("third.test", "v=spf1 ip4:127.0.0.1 -all"),
    txt("nodmarc.test", "v=spf1 ip4:127.0.0.1 -all"),
    txt("elsewhere.test", "v=spf1 ip4:192.0.2.7 -all"),
  ]);
  const check = async (
    o: { from: string; sender: string; signWith?: typeof own; addFrom?: string },
  ) => {
    let message = enc.encode(`From: ${o.from}\r\nSubject: dmarc\r\n\r\nbody\r\n`);
    if (o.signWith) {
      // Signed by signWith's domain whatever the From says (a third party may sign too).
      const entry = { ...o.signWith, key: o.signWith.path };
      const { fields, bodyStart } = parseHeaderSection(asLatin1(message));
      const sig = await dkimSignature(fields, bodyHash(message.subarray(bodyStart)), {
        entry,
        key: await dkimKey(entry),
        time: Math.floor(Date.now() / 1000),
      });
      message = enc.encode(sig + new TextDecoder().decode(message));
    }
    if (o.addFrom) {
      message = enc.encode(`From: ${o.addFrom}\r\n${new TextDecoder().decode(message)}`);
    }
    const { resolve } = boundedResolver({
      nameserver: { host: "127.0.0.1", port: dns.port },
      timeoutMs: 5000,
      maxQueries: 50,
    });
    return await verifyMessage(message, {
      resolver: resolve,
      authservId: "mx.skiff.test",
      ip: "127.0.0.1",
      helo: "client.test",
      sender: o.sender,
      dmarc: true,
      minKeyBits: 1024,
      timeoutMs: 5000,
    });
  };
  try {
    await t.step("aligned SPF → pass", async () => {
      const v = await check({ from: "a@org.test", sender: "bounce@org.test" });
      assert.equal(v.spf, "pass");
      assert.equal(v.dmarc, "pass");
      assert.equal(v.dmarcPolicy, "reject");
    });
    await t.step("aligned DKIM, unaligned SPF → pass", async () => {
      const v = await check({ from: "a@org.test", sender: "x@third.test", signWith: own });
      assert.deepEqual(v.dkim, ["pass"]);
      assert.equal(v.dmarc, "pass");
    });
    await t.step("SPF and DKIM pass for another domain only → fail", async () => {
      const v = await check({ from: "a@org.test", sender: "x@third.test", signWith: other });
      assert.equal(v.spf, "pass");
      assert.deepEqual(v.dkim, ["pass"]);
      assert.equal(v.dmarc, "fail");
      assert.equal(v.dmarcPolicy, "reject");
      assert.match(v.authResults, /dmarc=fail .*header\.from=org\.test/);
    });
    await t.step("nothing passes → fail", async () => {
      const v = await check({ from: "a@org.test", sender: "x@elsewhere.test" });
      assert.equal(v.spf, "fail");
      assert.equal(v.dmarc, "fail");
    });
    await t.step("a From added above the over-signed one breaks the signature", async () => {
      const v = await check({
        from: "a@org.test",
        sender: "x@third.test",
        signWith: own,
        addFrom: "ceo@org.test",
      });
      assert.notDeepEqual(v.dkim, ["pass"], v.authResults);
    });
    await t.step("From domain without a DMARC record → none", async () => {
      const v = await check({ from: "a@nodmarc.test", sender: "x@nodmarc.test" });
      assert.equal(v.spf, "pass");
      assert.equal(v.dmarc, "none");
      assert.equal(v.dmarcPolicy, "");
    });
  } finally {
    await dns.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
