/**
 * End to end with real peers: swaks submits to a running skiff and the
 * Maildir file holds the exact body plus the added headers; mail for another
 * domain is relayed to Postfix's smtp-sink as the smarthost.
 */
import assert from "node:assert/strict";
import { freePort, maildirFiles, RawClient, runSkiff, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

async function swaks(args: string[]): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command("swaks", { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout) + dec.decode(out.stderr) };
}

peerTest(
  "swaks to skiff: Maildir holds the exact body plus added headers",
  [PEERS.swaks],
  async () => {
    const server = await SkiffServer.start();
    try {
      const body = "Line one\r\n.leading dot stays\r\n\r\nlast line";
      const r = await swaks([
        "--server",
        `127.0.0.1:${server.port}`,
        "--from",
        "alice@example.org",
        "--to",
        "bob@localhost",
        "--helo",
        "client.test",
        "--header",
        "Subject: swaks e2e",
        "--body",
        body,
      ]);
      assert.equal(r.code, 0, r.out);
      const id = /queued as (\S+)/.exec(r.out)?.[1];
      assert.ok(id, r.out);
      const files = await waitFor(
        async () => {
          const f = await maildirFiles(`${server.dir}/mail/bob`);
          return f.length > 0 ? f : null;
        },
        20_000,
        "maildir delivery",
      );
      assert.equal(files.length, 1);
      const text = await Deno.readTextFile(files[0]);
      const lines = text.split("\n");
      assert.equal(lines[0], "Return-Path: <alice@example.org>");
      assert.equal(lines[1], "Delivered-To: bob@localhost");
      assert.match(lines[2], /^Received: from client\.test \(\[127\.0\.0\.1\]\)$/);
      assert.match(text, new RegExp(`by localhost \\(skiff\\) with ESMTP id ${id}`));
      assert.match(text, /\nSubject: swaks e2e\n/);
      // The body, byte for byte (Maildir stores LF line endings; swaks ends the body with an empty line).
      const expected = "\n\n" + body.replaceAll("\r\n", "\n") + "\n\n";
      assert.ok(text.endsWith(expected), JSON.stringify(text.slice(-120)));
      await server.waitForLog(new RegExp(`removed id=${id}`));
      assert.match(
        server.log,
        new RegExp(`delivered id=${id} to=<bob@localhost> relay=local .*dsn=2\\.0\\.0 status=sent`),
      );
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

peerTest("relay to Postfix smtp-sink as the smarthost", [PEERS.smtpSink, PEERS.swaks], async () => {
  const sink = await Sink.start();
  const server = await SkiffServer.start({
    toml: `[relay]\nrelayhost = "127.0.0.1:${sink.port}"\n`,
  });
  try {
    const n = 10;
    for (let i = 0; i < n; i++) {
      const r = await swaks([
        "--server",
        `127.0.0.1:${server.port}`,
        "--from",
        "alice@localhost",
        "--to",
        `user${i}@example.com`,
        "--header",
        `Subject: relay ${i}`,
      ]);
      assert.equal(r.code, 0, r.out);
    }
    const subjects = (m: string[]) => new Set(m.map((t) => /Subject: (relay \d+)/.exec(t)?.[1]));
    // smtp-sink writes each dump file as data arrives: wait until every one is complete.
    const msgs = await waitFor(
      async () => {
        const m = await sink.messages();
        return subjects(m).size === n && !subjects(m).has(undefined) ? m : null;
      },
      30_000,
      "messages at the sink",
    );
    assert.equal(msgs.length, n);
    await waitFor(() => (server.log.match(/ removed id=/g) ?? []).length >= n, 10_000, "removal");
    assert.match(
      server.log,
      /delivered id=\S+ to=<user0@example\.com> relay=127\.0\.0\.1\S* .*status=sent/,
    );
  } finally {
    await server.stop();
    await server.cleanup();
    await sink.stop();
  }
});

Deno.test({
  name: "non-local mail whose destination refuses connections is deferred with the reason logged",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // A route keeps this test on loopback (MX delivery would look up example.com).
    const closed = await freePort();
    const server = await SkiffServer.start({
      toml: `[[route]]\ndomain = "example.com"\ntype = "smtp"\nhost = "127.0.0.1:${closed}"\n`,
    });
    try {
      const c = await RawClient.connect(server.port);
      for (
        const [line, want] of [
          ["", "220"],
          ["EHLO t", "250"],
          ["MAIL FROM:<a@localhost>", "250"],
          ["RCPT TO:<x@example.com>", "250"],
          ["DATA", "354"],
          ["Subject: x\r\n\r\nhi\r\n.", "250"],
        ]
      ) {
        if (line) await c.line(line);
        const r = await c.reply();
        assert.ok(r?.at(-1)?.startsWith(want), `${line}: ${r}`);
      }
      c.close();
      await server.waitForLog(
        /deferred id=\S+ to=<x@example\.com> .*dsn=4\.4\.1 status=deferred .*Connection refused/,
      );
      const q = await runSkiff(["--config", server.configPath, "mailq"]);
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /x@example\.com/);
      assert.match(q.stdout, /Connection refused/);
      assert.match(q.stdout, /-- \d+ Kbytes in 1 Request\./);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});
