/**
 * One delivery pass (lib/queue/dispatch.ts) on its own, without the queue
 * manager: a real spool in a temp dir, and the pass's seams faked — the
 * network (`relay`), the worker children (`runJob`) and the clock — so each
 * test sees exactly which groups were handed to whom and what the journal
 * then says. Covers grouping by destination, expiry, loop detection, a
 * failing worker becoming a deferral, and a listener's fixed destination.
 */
import assert from "node:assert/strict";
import { dispatch, type DispatchDeps } from "../lib/queue/dispatch.ts";
import { DestinationLimiter } from "../lib/queue/limits.ts";
import type { NetContext } from "../lib/deliver/smtp.ts";
import type { ProgramPool } from "../lib/deliver/program.ts";
import type { SendResult } from "../lib/smtp/client.ts";
import type { MessageState, RecipientState } from "../lib/spool/records.ts";
import { Spool } from "../lib/spool/spool.ts";
import type { DeliveryJob, WorkerReport } from "../lib/worker/protocol.ts";
import { WorkerError } from "../lib/worker/run_job.ts";
import { spoolMessage, testConfig } from "./delivery_peers.ts";

const NOW = 1_800_000_000_000;

interface Seen {
  relay: string[][];
  jobs: DeliveryJob[];
  enqueued: string[];
}

/** A pass's dependencies over a real spool; `runJob` defaults to delivering every target. */
async function setup(
  dir: string,
  toml: string,
  runJob?: (job: DeliveryJob) => Promise<WorkerReport>,
): Promise<{ deps: DispatchDeps; spool: Spool; seen: Seen }> {
  const cfg = testConfig(dir, toml);
  const spool = new Spool(cfg.spoolDir);
  await spool.init();
  const seen: Seen = { relay: [], jobs: [], enqueued: [] };
  const delivered = (job: DeliveryJob): Promise<WorkerReport> =>
    Promise.resolve({
      file: job.file,
      results: job.targets.map((t) => ({
        rcpt: t.rcpt,
        outcome: "delivered" as const,
        dsn: "2.0.0",
        text: "Delivered by the fake worker",
      })),
    });
  const deps: DispatchDeps = {
    cfg,
    spool,
    now: () => NOW,
    // The relay seam below replaces every network delivery; these are never reached.
    net: {} as NetContext,
    programs: {} as ProgramPool,
    limiter: new DestinationLimiter(),
    aliases: () => new Map(),
    runJob: (job) => {
      seen.jobs.push(job);
      return (runJob ?? delivered)(job);
    },
    switchesUsers: () => false,
    relay: (_state: MessageState, rcpts: RecipientState[]): Promise<SendResult> => {
      seen.relay.push(rcpts.map((r) => r.address));
      return Promise.resolve({
        relay: "fake.test[192.0.2.1]:25",
        recipients: rcpts.map((r) => ({
          address: r.address,
          outcome: "delivered" as const,
          code: 250,
          dsn: "2.0.0",
          text: "ok",
        })),
      });
    },
    enqueue: (id) => seen.enqueued.push(id),
  };
  return { deps, spool, seen };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dispatch_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const byAddress = (s: MessageState) => Object.fromEntries(s.recipients.map((r) => [r.address, r]));

Deno.test("recipients are grouped by destination: one relay call per domain, one worker job for local", async () => {
  await withDir(async (dir) => {
    const toml = `[[route]]\ndomain = "gone.test"\ntype = "discard"\n`;
    const { deps, spool, seen } = await setup(dir, toml);
    const to = ["a@one.test", "b@one.test", "c@two.test", "dave@localhost", "x@gone.test"];
    const id = await spoolMessage(spool, { from: "s@one.test", to }, undefined, NOW);
    const state = await dispatch(deps, id, false);
    assert.deepEqual(seen.relay.map((g) => g.sort()).sort(), [["a@one.test", "b@one.test"], [
      "c@two.test",
    ]]);
    assert.equal(seen.jobs.length, 1);
    assert.deepEqual(seen.jobs[0].targets.map((t) => [t.address, t.destination.kind]), [
      ["dave@localhost", "maildir"],
    ]);
    const r = byAddress(state);
    for (const a of to) assert.equal(r[a].status, "delivered", a);
    assert.equal(
      r["x@gone.test"].history.at(-1)?.t === "delivered" && r["x@gone.test"].text,
      "Discarded",
    );
    assert.equal(state.done, true);
  });
});

Deno.test("a message past queue.lifetime fails every open recipient with 4.4.7 and nothing is sent", async () => {
  await withDir(async (dir) => {
    const { deps, spool, seen } = await setup(dir, "");
    // testConfig already wrote [queue]; set the lifetime on the checked config.
    deps.cfg.queue.lifetime = 3600;
    const id = await spoolMessage(
      spool,
      { from: "s@one.test", to: ["a@one.test", "dave@localhost"] },
      undefined,
      NOW - 3601 * 1000,
    );
    const state = await dispatch(deps, id, true);
    assert.equal(seen.relay.length, 0);
    assert.equal(seen.jobs.length, 0);
    for (const r of state.recipients) {
      assert.equal(r.status, "failed", r.address);
      assert.equal(r.dsn, "4.4.7", r.address);
      assert.match(r.text ?? "", /expired after 3600 s/);
    }
    // The sender is told: a bounce was queued.
    assert.equal(seen.enqueued.length, 1);
  });
});

Deno.test("more Received headers than delivery.max_received fails the message 5.4.6 (a loop)", async () => {
  await withDir(async (dir) => {
    const { deps, spool, seen } = await setup(dir, `[delivery]\nmax_received = 3\n`);
    const body = "Received: from a by b\r\n".repeat(4) + "Subject: loop\r\n\r\nhi\r\n";
    const id = await spoolMessage(
      spool,
      { from: "", to: ["a@one.test", "dave@localhost"] },
      body,
      NOW,
    );
    const state = await dispatch(deps, id, false);
    assert.equal(seen.relay.length, 0);
    assert.equal(seen.jobs.length, 0);
    for (const r of state.recipients) {
      assert.equal(r.status, "failed");
      assert.equal(r.dsn, "5.4.6");
    }
    // The null sender gets no bounce.
    assert.deepEqual(seen.enqueued, []);
    // Three Received headers are not a loop.
    const ok = await spoolMessage(
      spool,
      { from: "", to: ["a@one.test"] },
      "Received: x\r\n".repeat(3) + "\r\nhi\r\n",
      NOW,
    );
    assert.equal((await dispatch(deps, ok, false)).recipients[0].status, "delivered");
  });
});

Deno.test("a worker that fails defers its recipients with the cause; a missing result defers too", async () => {
  await withDir(async (dir) => {
    let calls = 0;
    const { deps, spool } = await setup(dir, "", (job) => {
      calls++;
      if (calls === 1) return Promise.reject(new WorkerError("Worker timed out", "stuck"));
      // Second pass: a report that names only the first target.
      return Promise.resolve({
        file: job.file,
        results: [{ rcpt: job.targets[0].rcpt, outcome: "delivered", dsn: "2.0.0", text: "ok" }],
      });
    });
    const to = ["dave@localhost", "erin@localhost"];
    const id = await spoolMessage(spool, { from: "s@one.test", to }, undefined, NOW);
    const first = await dispatch(deps, id, false);
    for (const r of first.recipients) {
      assert.equal(r.status, "deferred", r.address);
      assert.equal(r.dsn, "4.3.0");
      assert.match(r.text ?? "", /^Local delivery failed: Worker timed out: stuck/);
      assert.ok(r.nextAttempt > NOW, "a retry time in the future");
    }
    const second = await dispatch(deps, id, true);
    const r = byAddress(second);
    assert.equal(r["dave@localhost"].status, "delivered");
    assert.equal(r["erin@localhost"].status, "deferred");
    assert.equal(r["erin@localhost"].text, "Worker gave no result");
    assert.equal(r["erin@localhost"].attempts, 2);
  });
});

Deno.test("a listener's fixed destination overrides the routing table for every recipient", async () => {
  await withDir(async (dir) => {
    const { deps, spool, seen } = await setup(dir, "");
    const discard = await spoolMessage(
      spool,
      {
        from: "s@one.test",
        to: ["a@one.test", "dave@localhost"],
        params: { destination: "discard:" },
      },
      undefined,
      NOW,
    );
    const gone = await dispatch(deps, discard, false);
    assert.equal(seen.relay.length, 0);
    assert.equal(seen.jobs.length, 0);
    for (const r of gone.recipients) assert.equal(r.text, "Discarded");
    // maildir:<root>: remote domains too go to a local mailbox, through a worker.
    const box = await spoolMessage(
      spool,
      { from: "s@one.test", to: ["a@one.test"], params: { destination: `maildir:${dir}/fixed` } },
      undefined,
      NOW,
    );
    await dispatch(deps, box, false);
    assert.equal(seen.relay.length, 0);
    assert.deepEqual(seen.jobs.map((j) => j.targets.map((t) => t.destination)), [[
      { kind: "maildir", path: `${dir}/fixed`, user: null },
    ]]);
  });
});
