/**
 * A local user's mail is DKIM-signed on both local paths: `sendmail` run as
 * nobody with the manager up (peercred submission socket) and down
 * (maildrop, picked up by `skiff flush`). The signature passes skiff's own
 * verifier against the record keygen printed (dnsmasq); a From domain the
 * user's envelope sender is not in is left unsigned, even with a key for it.
 */
import assert from "node:assert/strict";
import { boundedResolver } from "../lib/mailauth/resolver.ts";
import { verifyMessage } from "../lib/mailauth/verify.ts";
import { startDnsmasq } from "./delivery_peers.ts";
import { maildirFiles, runSkiff, SkiffServer, waitFor } from "./harness.ts";
import { dkimToml, headerOf, keygen, keyRecord } from "./mailauth_peers.ts";
import { PEERS, peerTest } from "./peers.ts";
import { makeShims, run, shimToml } from "./shim_helpers.ts";

const crlf = (s: string) => s.replace(/\r?\n/g, "\r\n");

peerTest(
  "dkim signing of local submission: sendmail as nobody, manager up (socket) and down (maildrop)",
  [PEERS.setpriv, PEERS.python3, PEERS.dnsmasq],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-dkim-local-" });
    await Deno.chmod(dir, 0o755);
    const keys = [
      await keygen(dir, { domain: "example.test", selector: "loc", type: "ed25519" }),
      await keygen(dir, { domain: "other.test", selector: "loc", type: "ed25519" }),
    ];
    const dns = await startDnsmasq(["--local=/test/", ...keys.map(keyRecord)]);
    const server = await SkiffServer.start({
      dir,
      top: `hostname = "example.test"`,
      domains: ["localhost", "example.test"],
      toml: shimToml(dir, dkimToml(keys)),
    });
    let stopped = false;
    try {
      const bin = await makeShims(dir, server.configPath);
      const msg = (id: string, from = "nobody@example.test") =>
        `From: ${from}\nTo: bob@localhost\nSubject: ${id}\nMessage-ID: <${id}@example.test>\n\nhi\n`;
      const send = async (id: string, from?: string) => {
        const r = await run([`${bin}/sendmail`, "-t", "-i", "-f", "nobody@example.test"], {
          stdin: msg(id, from),
          nobody: true,
        });
        assert.equal(r.code, 0, r.stderr);
      };
      const stored = (id: string) =>
        waitFor(
          async () => {
            for (const f of await maildirFiles(`${dir}/mail/bob`)) {
              const t = await Deno.readTextFile(f);
              if (t.includes(`<${id}@example.test>`)) return crlf(t);
            }
            return null;
          },
          20_000,
          id,
        );
      const dkimOf = async (message: string) => {
        const { resolve } = boundedResolver({
          nameserver: { host: "127.0.0.1", port: dns.port },
          timeoutMs: 5000,
          maxQueries: 20,
        });
        const v = await verifyMessage(new TextEncoder().encode(message), {
          resolver: resolve,
          authservId: "test",
          ip: "127.0.0.1",
          helo: "localhost",
          sender: "nobody@example.test",
          dmarc: false,
          minKeyBits: 1024,
          timeoutMs: 5000,
        });
        return v.dkim;
      };

      await send("up-1");
      const up = await stored("up-1");
      assert.match(
        headerOf(up),
        /DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed\/relaxed; d=example\.test;/,
      );
      assert.deepEqual(await dkimOf(up), ["pass"]);

      await send("up-2", "ceo@other.test");
      const foreign = await stored("up-2");
      assert.doesNotMatch(headerOf(foreign), /DKIM-Signature/);
      await server.waitForLog(/dkim not signed id=\S+ user=nobody domain=other\.test/);

      await server.stop();
      stopped = true;
      await send("down-1");
      const f = await runSkiff(["--config", server.configPath, "flush"]);
      assert.equal(f.code, 0, f.stdout + f.stderr);
      const down = await stored("down-1");
      assert.match(headerOf(down), /DKIM-Signature: .* d=example\.test;/);
      assert.deepEqual(await dkimOf(down), ["pass"]);
    } finally {
      if (!stopped) await server.stop();
      await server.cleanup();
      await dns.stop();
    }
  },
);
