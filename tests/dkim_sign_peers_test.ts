/**
 * Mail a SASL user submits is DKIM-signed by skiff, with keys made by
 * `skiff dkim keygen`, and the signatures verify in dkimpy (dkimverify) and
 * OpenDKIM (opendkim-testmsg) against the records keygen printed, served by
 * dnsmasq — RSA and Ed25519 alike. A changed body fails both; From is
 * over-signed (tests/dmarc_alignment_test.ts shows what that buys) and
 * dkimpy refuses an added From; mail from an unauthenticated client is not
 * signed.
 */
import assert from "node:assert/strict";
import { hashPassword } from "../lib/auth/credentials.ts";
import { freePort, maildirFiles, RawClient, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import {
  AUTH_PEERS,
  canUnshare,
  dkimToml,
  headerOf,
  inDnsNamespace,
  keygen,
  keyRecord,
} from "./mailauth_peers.ts";

const plain = (u: string, p: string) => btoa(`\0${u}\0${p}`);
const crlf = (s: string) => s.replace(/\r?\n/g, "\r\n");

/** Sends one message, optionally after AUTH PLAIN; returns the final reply line. */
async function send(port: number, o: { auth?: [string, string]; from: string; data: string }) {
  const c = await RawClient.connect(port);
  try {
    const step = async (line: string | null, code: string) => {
      if (line !== null) await c.line(line);
      const r = (await c.reply())!;
      assert.ok(r.at(-1)!.startsWith(code), `${line}: ${r.join(" | ")}`);
      return r.at(-1)!;
    };
    await step(null, "220");
    await step("EHLO client.test", "250");
    if (o.auth) await step(`AUTH PLAIN ${plain(...o.auth)}`, "235");
    await step(`MAIL FROM:<${o.from}>`, "250");
    await step("RCPT TO:<bob@localhost>", "250");
    await step("DATA", "354");
    return await step(`${o.data}.`, "250");
  } finally {
    c.close();
  }
}

/** Removes the DKIM-Signature fields except the one with s=`keep`. */
function onlySignature(message: string, keep: string): string {
  const head = headerOf(message);
  const fields = head.split(/\r\n(?![ \t])/);
  const kept = fields.filter((f) => !/^DKIM-Signature:/i.test(f) || f.includes(`s=${keep};`));
  return kept.join("\r\n") + message.slice(head.length);
}

peerTest(
  "dkim signing: skiff-signed mail verifies in dkimpy and opendkim (rsa-sha256, ed25519-sha256)",
  [AUTH_PEERS.dkimverify, AUTH_PEERS.opendkim, AUTH_PEERS.unshare, PEERS.dnsmasq],
  async (t) => {
    if (!canUnshare()) return console.error("dkim peers need root (unshare --net)");
    const dir = await Deno.makeTempDir({ prefix: "skiff-dkim-sign-" });
    const keys = [
      await keygen(dir, { domain: "example.test", selector: "r2026", type: "rsa" }),
      await keygen(dir, { domain: "example.test", selector: "e2026", type: "ed25519" }),
    ];
    const records = keys.map(keyRecord);
    await Deno.writeTextFile(`${dir}/creds`, `alice@example.test:${await hashPassword("pw")}\n`);
    const sub = await freePort();
    const server = await SkiffServer.start({
      dir,
      toml: `[[listener]]
address = "127.0.0.1:${sub}"
auth = "sasl"
auth_plaintext = true
require_auth = true
[auth]
credentials = "${dir}/creds"
${dkimToml(keys)}`,
    });
    try {
      await t.step("keygen writes the key with mode 0600", async () => {
        for (const k of keys) assert.equal((await Deno.stat(k.path)).mode! & 0o777, 0o600);
        assert.match(keys[1].record, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
      });
      const data = crlf(
        "From: Alice <alice@example.test>\nTo: bob@localhost\nSubject: signed  by skiff\n" +
          "Date: Wed, 2 Dec 2026 14:00:00 +0000\nMessage-ID: <sign-1@example.test>\n\n" +
          "Hello Bob,  \n\nthis is signed.\n\n\n",
      );
      await send(sub, { auth: ["alice@example.test", "pw"], from: "alice@example.test", data });
      const [file] = await waitFor(async () => {
        const f = await maildirFiles(`${dir}/mail/bob`);
        return f.length ? f : null;
      });
      const stored = crlf(await Deno.readTextFile(file));
      await server.waitForLog(/dkim signed id=\S+ domain=example\.test selectors=r2026,e2026/);

      for (const k of keys) {
        await t.step(`dkimpy and opendkim verify the ${k.algorithm} signature`, async () => {
          const one = onlySignature(stored, k.selector);
          assert.match(headerOf(one), new RegExp(`a=${k.algorithm}; c=relaxed/relaxed`));
          assert.match(headerOf(one), /h=From:From:/, "From is over-signed");
          const py = await inDnsNamespace(records, ["/usr/bin/dkimverify"], one);
          assert.equal(py.out, "signature ok");
          assert.equal(py.code, 0);
          const od = await inDnsNamespace(records, ["/usr/sbin/opendkim-testmsg"], one);
          assert.equal(od.code, 0, od.out);
          const changed = one.replace("this is signed.", "this is changed.");
          const bad = await inDnsNamespace(records, ["/usr/bin/dkimverify"], changed);
          assert.notEqual(bad.code, 0, "a changed body must fail in dkimpy");
          const badOd = await inDnsNamespace(records, ["/usr/sbin/opendkim-testmsg"], changed);
          assert.notEqual(badOd.code, 0, "a changed body must fail in opendkim");
          // dkimpy refuses a second From whatever h= says; h= above proves the over-signing.
          const extraFrom = `From: Mallory <m@evil.test>\r\n${one}`;
          const forged = await inDnsNamespace(records, ["/usr/bin/dkimverify"], extraFrom);
          assert.notEqual(forged.code, 0, "a second From must fail");
        });
      }

      await t.step("mail from an unauthenticated client is not signed", async () => {
        const before = (await maildirFiles(`${dir}/mail/bob`)).length;
        await send(server.port, {
          from: "alice@example.test",
          data: data.replace("sign-1", "n-2"),
        });
        const files = await waitFor(async () => {
          const f = await maildirFiles(`${dir}/mail/bob`);
          return f.length > before ? f : null;
        });
        const text = await Deno.readTextFile(files.at(-1)!);
        assert.ok(text.includes("<n-2@example.test>"));
        assert.doesNotMatch(headerOf(crlf(text)), /DKIM-Signature:/i);
      });
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);
