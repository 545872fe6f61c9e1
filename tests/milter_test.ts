/**
 * Milters as operators plug them in: a real rspamd (its proxy worker in
 * milter mode) on a listener's `milters`. rspamd's header reaches the
 * delivered message, GTUBE is refused at end of DATA with rspamd's own
 * reply and nothing is queued; with the milter down the default action
 * (tempfail) answers 451 4.7.1 at MAIL, and "accept" lets mail through.
 */
import assert from "node:assert/strict";
import { freePort, maildirFiles, RawClient, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { GTUBE, startRspamd } from "./rspamd.ts";

/** One SMTP transaction; the last reply line of each step: greeting, EHLO, MAIL, RCPT, DATA, end. */
async function transaction(port: number, body: string): Promise<string[]> {
  const c = await RawClient.connect(port);
  const out: string[] = [];
  try {
    const step = async (line: string | null) => {
      if (line !== null) await c.line(line);
      const r = await c.reply();
      out.push(r ? r[r.length - 1] : "(closed)");
      return out[out.length - 1];
    };
    await step(null);
    await step("EHLO client.test");
    if (!(await step("MAIL FROM:<alice@example.org>")).startsWith("250")) return out;
    await step("RCPT TO:<bob@localhost>");
    if (!(await step("DATA")).startsWith("354")) return out;
    await c.line(
      `From: alice@example.org\r\nTo: bob@localhost\r\nSubject: milter\r\n` +
        `Message-ID: <m-${crypto.randomUUID()}@example.org>\r\n\r\n${body}\r\n.`,
    );
    await step(null);
    await step("QUIT");
  } finally {
    c.close();
  }
  return out;
}

async function serverWithMilter(milter: string, action = "tempfail") {
  const port = await freePort();
  const server = await SkiffServer.start({
    toml: `[[listener]]
address = "127.0.0.1:${port}"
milters = ["${milter}"]
[milter]
default_action = "${action}"
connect_timeout = 5
command_timeout = 60
content_timeout = 120
`,
  });
  return { server, port };
}

peerTest(
  "rspamd as a milter: its header reaches the mailbox, GTUBE is refused at end of DATA",
  [PEERS.rspamd],
  async () => {
    const rspamd = await startRspamd(PEERS.rspamd.bin);
    const { server, port } = await serverWithMilter(`inet:127.0.0.1:${rspamd.port}`);
    try {
      const ok = await transaction(port, "a clean message");
      assert.match(ok[5], /^250 2\.0\.0 Ok: queued as/, ok.join(" | ") + server.log);
      const files = await waitFor(
        async () => {
          const f = await maildirFiles(`${server.dir}/mail/bob`);
          return f.length > 0 ? f : null;
        },
        20_000,
        "delivery",
      );
      const text = await Deno.readTextFile(files[0]);
      assert.match(text, /^X-Spam: Yes\r?$/m, text); // added by rspamd through the milter
      assert.match(text, /a clean message/);
      const spam = await transaction(port, GTUBE);
      assert.match(spam[5], /^554 5\.7\.1 Gtube pattern/, spam.join(" | "));
      assert.equal((await maildirFiles(`${server.dir}/mail/bob`)).length, 1);
      await server.waitForLog(/milter=.* verdict=reject .*Gtube/);
    } finally {
      await server.stop();
      await server.cleanup();
      await rspamd.stop();
    }
  },
);

Deno.test({
  name: "a milter that is down: tempfail answers 451 4.7.1 at MAIL; accept lets mail through",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const closed = `inet:127.0.0.1:${await freePort()}`; // nothing listens there
    const t = await serverWithMilter(closed, "tempfail");
    try {
      const r = await transaction(t.port, "x");
      assert.match(r[2], /^451 4\.7\.1 /, r.join(" | "));
      await t.server.waitForLog(/milter unavailable .*action=tempfail/);
    } finally {
      await t.server.stop();
      await t.server.cleanup();
    }
    const a = await serverWithMilter(closed, "accept");
    try {
      const r = await transaction(a.port, "x");
      assert.match(r[5], /^250 2\.0\.0 Ok: queued as/, r.join(" | "));
    } finally {
      await a.server.stop();
      await a.server.cleanup();
    }
  },
});
