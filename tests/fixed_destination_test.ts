/**
 * A listener's fixed destination (`destination = "transport:nexthop"`):
 * everything accepted on that listener goes there whatever the recipient's
 * domain — to an SMTP host, into a Maildir tree, or discarded — while the
 * default listener still uses the routing table.
 */
import assert from "node:assert/strict";
import { freePort, maildirFiles, SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

peerTest(
  "listener destinations: smtp, maildir and discard override the router",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start();
    const [smtpPort, maildirPort, discardPort] = [
      await freePort(),
      await freePort(),
      await freePort(),
    ];
    const dir = await Deno.makeTempDir({ prefix: "skiff-fixed-" });
    const server = await SkiffServer.start({
      toml: `[[listener]]
address = "127.0.0.1:${smtpPort}"
destination = "smtp:127.0.0.1:${sink.port}"
[[listener]]
address = "127.0.0.1:${maildirPort}"
destination = "maildir:${dir}/fixed"
[[listener]]
address = "127.0.0.1:${discardPort}"
destination = "discard:"
`,
    });
    try {
      // Non-local and local recipients alike follow the listener's destination.
      await submitMessage(smtpPort, {
        to: ["far@example.com", "bob@localhost"],
        subject: "to-sink",
      });
      await submitMessage(maildirPort, { to: "carol@example.org", subject: "to-maildir" });
      const gone = await submitMessage(discardPort, {
        to: "dave@example.net",
        subject: "to-nowhere",
      });

      await waitFor(
        async () => (await sink.messages()).some((m) => m.includes("Subject: to-sink")),
        20_000,
        "the message at the sink",
      );
      const [file] = await waitFor(
        async () => {
          const f = await maildirFiles(`${dir}/fixed/carol`);
          return f.length > 0 ? f : null;
        },
        20_000,
        "the fixed Maildir",
      );
      assert.match(await Deno.readTextFile(file), /Subject: to-maildir/);
      await server.waitForLog(new RegExp(`removed id=${gone}`), 20_000);
      // bob@localhost went to the sink, not to the local Maildir.
      assert.deepEqual(await maildirFiles(`${server.dir}/mail/bob`), []);
      assert.match(server.log, /delivered id=\S+ to=<bob@localhost> relay=127\.0\.0\.1/);
      assert.doesNotMatch(server.log, /deferred id=/);
    } finally {
      await server.stop();
      await server.cleanup();
      await sink.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("fixed destination specs parse into destinations", async () => {
  const { fixedDestination } = await import("../lib/route/fixed.ts");
  const { parseConfig } = await import("../lib/config/load.ts");
  const cfg = parseConfig("", "t.toml", { cwd: "/tmp" });
  assert.equal(fixedDestination(cfg, "router"), null);
  assert.deepEqual(fixedDestination(cfg, "lmtp:unix:/run/dovecot/lmtp"), {
    kind: "lmtp",
    host: "",
    port: 0,
    socket: "/run/dovecot/lmtp",
    tls: "none",
  });
  assert.equal(fixedDestination(cfg, "lmtp:/run/x")?.kind, "lmtp");
  assert.deepEqual(fixedDestination(cfg, "lmtp:127.0.0.1:24"), {
    kind: "lmtp",
    host: "127.0.0.1",
    port: 24,
    socket: "",
    tls: "none",
  });
  assert.equal(fixedDestination(cfg, "smtp:[::1]:25")?.kind, "smtp");
  assert.deepEqual(fixedDestination(cfg, "maildir:"), {
    kind: "maildir",
    path: cfg.local.maildirRoot,
    user: null,
  });
  assert.deepEqual(fixedDestination(cfg, "discard:"), { kind: "discard" });
  assert.equal(fixedDestination(cfg, "smtp:no-port"), null);
});
