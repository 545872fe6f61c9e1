/**
 * Inbound checks end to end: mail signed by dkimpy (dkimsign) and sent to a
 * skiff MX listener gets one Authentication-Results field with dkim=pass,
 * spf=pass and dmarc=pass; the same mail with a changed body gets dkim=fail;
 * an incoming Authentication-Results claiming skiff's authserv-id is removed
 * while another host's is kept; and under dmarc = "enforce" a p=reject
 * failure is refused at the end of DATA with 550 5.7.1, p=quarantine gets
 * X-Skiff-Quarantine, and dmarc = "report" only records the result. An ARC
 * set made by dkimpy (arcsign) verifies (arc=pass), and fails once the body
 * is changed.
 */
import assert from "node:assert/strict";
import { freePort, maildirFiles, RawClient, SkiffServer, waitFor } from "./harness.ts";
import { startDnsmasq } from "./delivery_peers.ts";
import { AUTH_PEERS, headerOf, keygen, keyRecord, txt } from "./mailauth_peers.ts";
import { peerTest } from "./peers.ts";
import { run } from "./run_cmd.ts";

const crlf = (s: string) => s.replace(/\r?\n/g, "\r\n");

/** One SMTP transaction; resolves to the reply to the final dot. */
async function deliver(port: number, from: string, data: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const step = async (line: string | null) => {
      if (line !== null) await c.line(line);
      return (await c.reply())!.at(-1)!;
    };
    await step(null);
    await step("EHLO client.test");
    assert.match(await step(`MAIL FROM:<${from}>`), /^250/);
    assert.match(await step("RCPT TO:<bob@localhost>"), /^250/);
    assert.match(await step("DATA"), /^354/);
    return await step(`${data.replace(/^\./gm, "..")}.`);
  } finally {
    c.close();
  }
}

peerTest(
  "inbound: dkimpy-signed mail passes, a changed body fails, forged A-R removed, DMARC enforced",
  [AUTH_PEERS.dkimsign, AUTH_PEERS.arcsign, AUTH_PEERS.dnsmasq],
  async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-inbound-" });
    const key = await keygen(dir, { domain: "signed.test", selector: "py", type: "rsa" });
    const arcKey = await keygen(dir, { domain: "fwd.test", selector: "arc", type: "rsa" });
    const dns = await startDnsmasq([
      "--local=/test/",
      keyRecord(key),
      keyRecord(arcKey),
      txt("signed.test", "v=spf1 ip4:127.0.0.1 -all"),
      txt("_dmarc.signed.test", "v=DMARC1; p=reject"),
      txt("strict.test", "v=spf1 ip4:192.0.2.1 -all"),
      txt("_dmarc.strict.test", "v=DMARC1; p=reject"),
      txt("quar.test", "v=spf1 ip4:192.0.2.1 -all"),
      txt("_dmarc.quar.test", "v=DMARC1; p=quarantine"),
      txt("other.test", "v=spf1 ip4:127.0.0.1 -all"),
    ]);
    const reportPort = await freePort();
    const server = await SkiffServer.start({
      dir,
      top: `hostname = "mx.skiff.test"\nrelay_networks = []`,
      toml: `[[listener]]
address = "127.0.0.1:${reportPort}"
dmarc = "report"
[delivery]
nameserver = "127.0.0.1:${dns.port}"
`,
    });
    const stored = async (marker: string) => {
      const f = await waitFor(
        async () => {
          for (const p of await maildirFiles(`${dir}/mail/bob`)) {
            const text = await Deno.readTextFile(p);
            if (text.includes(marker)) return text;
          }
          return null;
        },
        15_000,
        `a stored message with ${marker}`,
      );
      return headerOf(crlf(f));
    };
    try {
      const plain = crlf(
        "From: Carol <carol@signed.test>\nTo: bob@localhost\nSubject: from dkimpy\n" +
          "Message-ID: <py-1@signed.test>\n" +
          "Authentication-Results: mx.skiff.test; dkim=pass header.d=forged.test\n" +
          "Authentication-Results: elsewhere.test; spf=pass smtp.mailfrom=x@y.test\n\n" +
          "Signed by dkimpy.\n",
      );
      const signed = await run(["/usr/bin/dkimsign", "py", "signed.test", key.path], plain);
      assert.match(signed.out, /^DKIM-Signature:/);
      const message = crlf(signed.out);

      await t.step(
        "dkimpy's signature passes; SPF and DMARC pass; forged A-R removed",
        async () => {
          assert.match(await deliver(server.port, "carol@signed.test", message), /^250 /);
          const head = await stored("<py-1@signed.test>");
          const ours = head.match(/^Authentication-Results: mx\.skiff\.test;(\r\n\t.*)+/m)?.[0];
          assert.ok(ours, head);
          assert.match(ours, /dkim=pass header\.i=@signed\.test header\.s=py /);
          assert.match(ours, /spf=pass .*smtp\.mailfrom=carol@signed\.test/);
          assert.match(ours, /dmarc=pass .*header\.from=signed\.test/);
          assert.equal(head.match(/^Authentication-Results: mx\.skiff\.test/gim)?.length, 1);
          assert.doesNotMatch(head, /forged\.test/);
          assert.match(head, /^Authentication-Results: elsewhere\.test; spf=pass/m);
          await server.waitForLog(/mailauth id=\S+ .*dkim=pass dmarc=pass .*forged_ar_removed=1/);
        },
      );

      await t.step("the same message with a changed body fails DKIM", async () => {
        const changed = message.replace("<py-1@", "<py-2@").replace("Signed by", "Changed by");
        // SPF still passes for signed.test, so DMARC passes on SPF alone.
        assert.match(await deliver(server.port, "carol@signed.test", changed), /^250 /);
        const head = await stored("<py-2@signed.test>");
        // mailauth says "neutral" for a body hash mismatch (RFC 6376 §6.1.3: not a pass).
        assert.match(
          head,
          /dkim=(fail|neutral) \(body hash did not verify\) header\.i=@signed\.test/,
        );
      });

      await t.step("an ARC set sealed by dkimpy verifies; a changed body breaks it", async () => {
        const hop = crlf(
          "Authentication-Results: fwd.test; spf=pass smtp.mailfrom=a@list.test\n" +
            "From: a@list.test\nTo: bob@localhost\nSubject: via a list\nMessage-ID: <arc-1@x>\n\n" +
            "Forwarded.\n",
        );
        const sealed = await run(
          ["/usr/bin/arcsign", "arc", "fwd.test", arcKey.path, "fwd.test"],
          hop,
        );
        assert.match(sealed.out, /^ARC-Seal: i=1; cv=none;/);
        assert.match(await deliver(server.port, "a@other.test", crlf(sealed.out)), /^250 /);
        assert.match(
          await stored("<arc-1@x>"),
          /arc=pass \(i=1 spf=pass\)/,
        );
        const broken = crlf(sealed.out).replace("<arc-1@", "<arc-2@").replace(
          "Forwarded.",
          "Changed.",
        );
        assert.match(await deliver(server.port, "a@other.test", broken), /^250 /);
        assert.match(await stored("<arc-2@x>"), /arc=fail/);
      });

      await t.step("enforce: DMARC p=reject failure is refused with 550 5.7.1", async () => {
        const forged = crlf("From: ceo@strict.test\nSubject: pay\nMessage-ID: <r-1@x>\n\nnow\n");
        const r = await deliver(server.port, "someone@other.test", forged);
        assert.match(r, /^550 5\.7\.1 .*DMARC policy of strict\.test/);
        await server.waitForLog(/mailauth id=\S+ .*dmarc=fail policy=reject .*action=reject/);
      });

      await t.step("enforce: p=quarantine is delivered with X-Skiff-Quarantine", async () => {
        const m = crlf("From: a@quar.test\nSubject: q\nMessage-ID: <q-1@x>\n\nq\n");
        assert.match(await deliver(server.port, "someone@other.test", m), /^250 /);
        const head = await stored("<q-1@x>");
        assert.match(
          head,
          /^X-Skiff-Quarantine: dmarc=fail policy=quarantine header\.from=quar\.test/m,
        );
        assert.match(head, /dmarc=fail/);
      });

      await t.step("report: the failure is recorded and the message accepted", async () => {
        const m = crlf("From: ceo@strict.test\nSubject: pay\nMessage-ID: <r-2@x>\n\nnow\n");
        assert.match(await deliver(reportPort, "someone@other.test", m), /^250 /);
        const head = await stored("<r-2@x>");
        assert.match(head, /dmarc=fail .*header\.from=strict\.test/);
        assert.match(head, /spf=pass .*smtp\.mailfrom=someone@other\.test/);
      });
    } finally {
      await server.stop();
      await server.cleanup();
      await dns.stop();
    }
  },
);
