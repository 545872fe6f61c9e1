/**
 * The cron-driven flush: with no manager running, `skiff flush` runs one
 * queue pass over the spool, delivers what it can and exits 0 when the queue
 * is empty (75 while mail is still deferred). With a manager running, it
 * signals the manager instead.
 */
import assert from "node:assert/strict";
import { freePort, runSkiff, SkiffServer, submitMessage, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

peerTest(
  "skiff flush with no manager delivers deferred mail and exits 0",
  [PEERS.smtpSink],
  async () => {
    const dead = await freePort();
    const server = await SkiffServer.start({
      toml: `[relay]\nrelayhost = "127.0.0.1:${dead}"\nconnect_timeout = 2\n`,
    });
    await submitMessage(server.port, { to: "far@example.com", subject: "flush" });
    await server.waitForLog(/deferred id=\S+ to=<far@example\.com>/);
    await server.stop();
    // Still the smarthost is down: the pass leaves it queued and says so.
    const stillDown = await runSkiff(["--config", server.configPath, "flush"]);
    assert.equal(stillDown.code, 75, stillDown.stdout + stillDown.stderr);
    const sink = await Sink.start();
    try {
      const cfg = await Deno.readTextFile(server.configPath);
      await Deno.writeTextFile(
        server.configPath,
        cfg.replace(`127.0.0.1:${dead}`, `127.0.0.1:${sink.port}`),
      );
      const r = await runSkiff(["--config", server.configPath, "flush"]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /0 message\(s\) still queued/);
      const msgs = await sink.messages();
      assert.equal(msgs.filter((m) => m.includes("Subject: flush")).length, 1);
    } finally {
      await sink.stop();
      await server.cleanup();
    }
  },
);

peerTest("skiff flush with a manager running tells it to retry now", [PEERS.smtpSink], async () => {
  const port = await freePort();
  // A long retry time: only the flush can bring the message back soon.
  const server = await SkiffServer.start({
    queue: "retry_min = 3600\nretry_max = 7200",
    toml: `[relay]\nrelayhost = "127.0.0.1:${port}"\nconnect_timeout = 2\n`,
  });
  let sink: Sink | null = null;
  try {
    await submitMessage(server.port, { to: "far@example.com", subject: "flush" });
    await server.waitForLog(/deferred id=\S+ to=<far@example\.com>/);
    sink = await Sink.start({ port });
    const r = await runSkiff(["--config", server.configPath, "flush"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /asked the running manager \(pid \d+\)/);
    await server.waitForLog(/delivered id=\S+ to=<far@example\.com>/, 20_000);
    const s = sink;
    await waitFor(
      async () => (await s.messages()).some((m) => m.includes("Subject: flush")),
      10_000,
      "sink",
    );
  } finally {
    await server.stop();
    await server.cleanup();
    await sink?.stop();
  }
});

peerTest(
  "two cron flushes at once with no manager: each message is delivered exactly once",
  [PEERS.smtpSink],
  async () => {
    const dead = await freePort();
    const server = await SkiffServer.start({
      toml: `[relay]\nrelayhost = "127.0.0.1:${dead}"\nconnect_timeout = 2\n`,
    });
    const subjects = ["c1", "c2", "c3", "c4"];
    for (const s of subjects) {
      await submitMessage(server.port, { to: `${s}@example.com`, subject: s });
    }
    for (const s of subjects) await server.waitForLog(new RegExp(`deferred id=\\S+ to=<${s}@`));
    await server.stop();
    const sink = await Sink.start();
    try {
      const cfg = await Deno.readTextFile(server.configPath);
      await Deno.writeTextFile(
        server.configPath,
        cfg.replace(`127.0.0.1:${dead}`, `127.0.0.1:${sink.port}`),
      );
      const [a, b] = await Promise.all([
        runSkiff(["--config", server.configPath, "flush"]),
        runSkiff(["--config", server.configPath, "flush"]),
      ]);
      assert.equal(a.code, 0, a.stdout + a.stderr);
      assert.equal(b.code, 0, b.stdout + b.stderr);
      const msgs = await sink.messages();
      for (const s of subjects) {
        assert.equal(
          msgs.filter((m) => new RegExp(`^Subject: ${s}\\r?$`, "m").test(m)).length,
          1,
          s,
        );
      }
      assert.equal(msgs.length, subjects.length);
    } finally {
      await sink.stop();
      await server.cleanup();
    }
  },
);
