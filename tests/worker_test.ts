/**
 * Per-message isolation: a worker child that crashes, hangs or prints garbage
 * never harms the manager and never loses the message; the local recipients
 * are deferred and delivered by a later, healthy worker. The faulty workers
 * run through the manager's worker pool (lib/worker/pool.ts), as real ones do.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/load.ts";
import type { Config } from "../lib/config/types.ts";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import type { DeliveryJob } from "../lib/worker/protocol.ts";
import { runWorkerJob } from "../lib/worker/run_job.ts";
import { WorkerPool } from "../lib/worker/pool.ts";
import { maildirFiles } from "./harness.ts";

const encoder = new TextEncoder();

async function setup(): Promise<{ dir: string; cfg: Config; spool: Spool; id: string }> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-worker-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"\n[local]\nmaildir_root = "${dir}/mail"\n[queue]\nretry_min = 1\nretry_max = 2\n`,
    "test.toml",
  );
  const spool = new Spool(cfg.spoolDir);
  await spool.init();
  const w = await spool.begin();
  const content = encoder.encode("Subject: isolation\r\n\r\nhello\r\n");
  await w.write(content);
  await w.commit({
    id: w.id,
    from: "a@localhost",
    recipients: [{ address: "dave@localhost" }],
    received: Date.now(),
    client: { address: "127.0.0.1", helo: "t" },
    protocol: "ESMTP",
    size: content.length,
  });
  return { dir, cfg, spool, id: w.id };
}

/** A pool of fake workers: deno processes running the given code. */
function evalWorkers(code: string, timeoutMs = 3000): WorkerPool {
  return new WorkerPool({
    timeoutMs: () => timeoutMs,
    perKey: () => 1,
    total: () => 1,
    command: { command: Deno.execPath(), args: ["eval", code] },
  });
}

/**
 * The faults, and the worker timeout each runs under: only the hang needs a
 * short one. The others get a deadline far beyond a `deno eval` start on a
 * loaded machine, or the timeout would win and report the wrong cause.
 */
const FAULTS: Record<string, { code: string; error: RegExp; timeoutMs?: number }> = {
  crash: { code: "Deno.kill(Deno.pid, 'SIGKILL')", error: /signal SIGKILL/ },
  exit: { code: "Deno.exit(3)", error: /exit code 3/ },
  hang: {
    code: "await new Promise(() => setInterval(() => {}, 1000))",
    error: /timed out/,
    timeoutMs: 1500,
  },
  garbage: { code: "console.log('this is not json')", error: /not JSON/ },
  wrongFile: {
    code: "console.log(JSON.stringify({file: 'ZZZZ', delete: true}))",
    error: /reported on/,
  },
  flood: { code: "console.log('x'.repeat(200000))", error: /more than/ },
};

for (const [name, fault] of Object.entries(FAULTS)) {
  Deno.test({
    name: `worker that fails (${name}) defers, then a healthy worker delivers`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const { dir, cfg, spool, id } = await setup();
      try {
        let now = Date.now();
        const fakes = evalWorkers(fault.code, fault.timeoutMs ?? 60_000);
        const bad = new QueueManager({
          config: cfg,
          spool,
          now: () => now,
          runJob: (job: DeliveryJob, o) => fakes.run(job, o),
        });
        await bad.scan();
        await bad.idle();
        await bad.stop();
        await fakes.close();
        assert.equal(fakes.stats.alive, 0, "the failed worker left the pool");
        const state = await spool.load(id);
        assert.equal(state.done, false);
        const r = state.recipients[0];
        assert.equal(r.status, "deferred");
        assert.equal(r.dsn, "4.3.0");
        assert.match(r.text ?? "", fault.error);
        assert.deepEqual(await maildirFiles(`${dir}/mail/dave`), []);
        // Later, a real worker (a copy of skiff, from the manager's own pool) delivers it.
        now = r.nextAttempt + 1;
        const good = new QueueManager({ config: cfg, spool, now: () => now });
        await good.scan();
        await good.idle();
        assert.deepEqual(good.workerPool.stats, { started: 1, alive: 1 }, "a pooled worker");
        await good.stop();
        assert.equal(good.workerPool.stats.alive, 0, "stop() closed the pool");
        assert.deepEqual(await spool.list(), []);
        const files = await maildirFiles(`${dir}/mail/dave`);
        assert.equal(files.length, 1);
        assert.match(await Deno.readTextFile(files[0]), /Subject: isolation/);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "a real worker child delivers from the content on stdin and reports each result",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { dir, cfg, spool, id } = await setup();
    try {
      const report = await runWorkerJob({
        v: 2,
        file: id,
        hostname: "localhost",
        sender: "a@localhost",
        size: (await spool.load(id)).envelope.size,
        targets: [{
          rcpt: 0,
          address: "dave@localhost",
          user: "dave",
          destination: { kind: "maildir", path: cfg.local.maildirRoot, user: null },
        }],
        log: cfg.log,
      }, {
        timeoutMs: 20_000,
        content: async () => (await spool.content(id)).stream,
      });
      assert.equal(report.file, id);
      assert.deepEqual(report.results.map((r) => [r.rcpt, r.outcome]), [[0, "delivered"]]);
      assert.equal((await maildirFiles(`${dir}/mail/dave`)).length, 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
