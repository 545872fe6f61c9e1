/**
 * The operator's queue tools against real deferred mail (Postfix's
 * smtp-sink answering 4xx to RCPT): mailq, queue list --json, show, hold,
 * release, retry and delete with their confirmation counts, status --json,
 * the control socket's mode, and reload by SIGHUP and `skiff reload` — with
 * the manager running and with it stopped.
 */
import assert from "node:assert/strict";
import { freePort, runSkiff, SkiffServer, sleep, submitMessage, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";

/** smtp-sink refusing every RCPT with a 4xx: mail to it stays deferred. */
async function deferringSink(port: number): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(PEERS.smtpSink.bin, {
    args: ["-u", "nobody", "-r", "RCPT", `127.0.0.1:${port}`, "10"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  for (let i = 0; i < 100; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return child;
    } catch {
      await sleep(50);
    }
  }
  child.kill("SIGKILL");
  throw new Error("smtp-sink did not start");
}

/** Waits until the log shows `n` deferrals for `to`. */
function attempts(server: SkiffServer, to: string, n: number): Promise<boolean> {
  const re = new RegExp(`deferred id=\\S+ to=<${to.replace(/\./g, "\\.")}>`, "g");
  return waitFor(() => (server.log.match(re)?.length ?? 0) >= n, 15_000, `${n} deferrals of ${to}`);
}

const skiff = (cfg: string, ...args: string[]) => runSkiff(["--config", cfg, ...args]);

peerTest(
  "queue tools with the manager running: mailq, list, show, hold, release, retry, delete, status, reload",
  [PEERS.smtpSink],
  async () => {
    const sinkPort = await freePort();
    const sink = await deferringSink(sinkPort);
    const server = await SkiffServer.start({
      queue: "retry_min = 3600\nretry_max = 7200",
      toml: `[relay]\nrelayhost = "127.0.0.1:${sinkPort}"\nconnect_timeout = 2\n`,
    });
    const cfg = server.configPath;
    try {
      await submitMessage(server.port, { to: "ann@example.com", subject: "one" });
      await submitMessage(server.port, { to: "bob@example.org", subject: "two" });
      await server.waitForLog(/deferred id=\S+ to=<ann@example\.com>[^\n]*dsn=4/);
      await server.waitForLog(/deferred id=\S+ to=<bob@example\.org>[^\n]*dsn=4/);
      const mode = Deno.statSync(`${server.dir}/spool/control.sock`).mode! & 0o777;
      assert.equal(mode, 0o600);

      const mq = await skiff(cfg, "mailq");
      assert.match(mq.stdout, /^-Queue ID-/);
      assert.match(mq.stdout, /\(.*4\d\d.*\)\n\s+ann@example\.com/);
      assert.match(mq.stdout, /-- \d+ Kbytes in 2 Requests\./);

      const list = await skiff(cfg, "queue", "list", "--json");
      const entries = list.stdout.trim().split("\n").map((l) => JSON.parse(l));
      assert.equal(entries.length, 2);
      for (const e of entries) {
        assert.equal(e.queue_name, "deferred");
        assert.match(e.recipients[0].delay_reason, /4\d\d/);
        assert.equal(typeof e.arrival_time, "number");
      }
      const bobId = entries.find((e) => e.recipients[0].address === "bob@example.org").queue_id;

      const show = await skiff(cfg, "queue", "show", bobId);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, /sender:\s+<a@localhost>/);
      assert.match(show.stdout, /<bob@example\.org> deferred, 1 attempt\(s\)/);
      assert.match(show.stdout, /deferred 4\.\d\.\d/);
      const missing = await skiff(cfg, "queue", "show", "0000000000000ZZZZ");
      assert.equal(missing.code, 66);

      const hold = await skiff(cfg, "queue", "hold", "--domain", "example.org");
      assert.match(hold.stdout, /1 message\(s\) placed on hold/);
      assert.match((await skiff(cfg, "mailq")).stdout, new RegExp(`${bobId}!`));
      const st = JSON.parse((await skiff(cfg, "status", "--json")).stdout);
      assert.equal(st.pid, server.pid);
      assert.deepEqual(st.queue, { active: 0, deferred: 1, incoming: 0, hold: 1, total: 2 });
      assert.equal(typeof st.uptime_seconds, "number");
      assert.equal(st.connections, 0);
      assert.equal(st.oldest.queue_id, entries[0].queue_id);
      assert.match((await skiff(cfg, "status")).stdout, /manager: running, pid \d+/);

      const rel = await skiff(cfg, "queue", "release", bobId);
      assert.match(rel.stdout, /1 message\(s\) released from hold/);
      await attempts(server, "bob@example.org", 2);

      const retry = await skiff(cfg, "queue", "retry", "--all");
      assert.match(retry.stdout, /2 message\(s\) scheduled for immediate delivery/);
      await attempts(server, "ann@example.com", 2);

      // Reload: a changed key is applied; a bad file is refused and the manager keeps running.
      const text = await Deno.readTextFile(cfg);
      await Deno.writeTextFile(cfg, text.replace("retry_min = 3600", "retry_min = 1800"));
      server.kill("SIGHUP");
      await server.waitForLog(/reloaded config=\S+ changed=queue/);
      await Deno.writeTextFile(cfg, text + "\n[queue]\nbogus = 1\n");
      const bad = await skiff(cfg, "reload");
      assert.notEqual(bad.code, 0);
      await Deno.writeTextFile(cfg, text);
      const good = await skiff(cfg, "reload");
      assert.equal(good.code, 0, good.stderr);
      assert.match(good.stdout, /changed queue/);

      const del = await skiff(cfg, "queue", "delete", "--all");
      assert.match(del.stdout, /2 message\(s\) deleted/);
      await server.waitForLog(/removed id=\S+ by=operator/);
      assert.match((await skiff(cfg, "mailq")).stdout, /Mail queue is empty/);
    } finally {
      await server.stop();
      await server.cleanup();
      sink.kill("SIGKILL");
      await sink.status;
    }
  },
);

peerTest(
  "queue tools with no manager work on the spool under the lock",
  [PEERS.smtpSink],
  async () => {
    const sinkPort = await freePort();
    const sink = await deferringSink(sinkPort);
    const server = await SkiffServer.start({
      queue: "retry_min = 3600\nretry_max = 7200",
      toml: `[relay]\nrelayhost = "127.0.0.1:${sinkPort}"\nconnect_timeout = 2\n`,
    });
    const cfg = server.configPath;
    try {
      await submitMessage(server.port, { to: "ann@example.com", subject: "offline" });
      await server.waitForLog(/deferred id=\S+ to=<ann@example\.com>/);
      await server.stop();
      const st = await skiff(cfg, "status", "--json");
      const s = JSON.parse(st.stdout);
      assert.equal(s.manager, "not running");
      assert.equal(s.queue.deferred, 1);
      const hold = await skiff(cfg, "queue", "hold", "--all");
      assert.match(hold.stdout, /1 message\(s\) placed on hold/);
      assert.equal(
        JSON.parse((await skiff(cfg, "queue", "list", "--json")).stdout).queue_name,
        "hold",
      );
      // A cron flush leaves held mail alone.
      const f = await skiff(cfg, "flush");
      assert.equal(f.code, 0, f.stdout + f.stderr);
      assert.match(f.stdout, /0 message\(s\) still queued/);
      const rel = await skiff(cfg, "queue", "release", "--all");
      assert.match(rel.stdout, /1 message\(s\) released/);
      // retry without a manager runs a pass for the message here (still 4xx: still queued).
      const retry = await skiff(cfg, "queue", "retry", "--domain", "example.com");
      assert.match(retry.stdout, /1 message\(s\) scheduled/);
      assert.match(retry.stdout, /queue pass done, 1 message\(s\) still queued/);
      const del = await skiff(cfg, "queue", "delete", "--all");
      assert.match(del.stdout, /1 message\(s\) deleted/);
      const usage = await skiff(cfg, "queue", "hold");
      assert.equal(usage.code, 64);
      assert.match(usage.stderr, /Name the messages/);
    } finally {
      await server.cleanup();
      sink.kill("SIGKILL");
      await sink.status;
    }
  },
);
