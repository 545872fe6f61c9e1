/**
 * The queue manager's in-memory schedule on a real spool with a stub relay:
 * start() returns before the spool is read (the listeners must answer at
 * once with a large backlog) while delivery starts as messages are found,
 * and due messages run in next-attempt order (the heap) with nothing run
 * twice or forgotten.
 */
import assert from "node:assert/strict";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import type { MessageState, RecipientState } from "../lib/spool/records.ts";
import type { SendResult } from "../lib/smtp/client.ts";
import { spoolMessage, testConfig } from "./delivery_peers.ts";

function delivered(rcpts: RecipientState[]): SendResult {
  return {
    relay: "stub[127.0.0.1]:25",
    recipients: rcpts.map((r) => ({
      address: r.address,
      outcome: "delivered",
      code: 250,
      dsn: "2.0.0",
      text: "ok",
    })),
  };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "queue_manager_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("start() returns before the scan; a backlog is delivered once each, while scanning", async () => {
  await withDir(async (dir) => {
    const cfg = testConfig(dir, `[relay]\nrelayhost = "127.0.0.1:9"\n`);
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const ids = new Set<string>();
    for (let i = 0; i < 300; i++) {
      ids.add(await spoolMessage(spool, { from: "a@localhost", to: [`r${i}@example.net`] }));
    }
    const seen: string[] = [];
    let scanDone = false;
    let sentDuringScan = 0;
    const m = new QueueManager({
      config: cfg,
      spool,
      relay: (state: MessageState, rcpts: RecipientState[]) => {
        seen.push(state.envelope.id);
        if (!scanDone) sentDuringScan++;
        return Promise.resolve(delivered(rcpts));
      },
    });
    const { scanned } = m.start();
    assert.equal(seen.length, 0, "nothing is read before start() returns");
    assert.equal(await scanned, 300);
    scanDone = true;
    await m.idle();
    while ((await spool.list()).length > 0) {
      await m.idle();
      await new Promise((r) => setTimeout(r, 20));
    }
    await m.stop();
    assert.equal(seen.length, 300, "every message relayed exactly once");
    assert.deepEqual(new Set(seen), ids);
    assert.ok(sentDuringScan > 0, "delivery started before the scan finished");
  });
});

Deno.test("due messages run in next-attempt order; rescheduling moves a message", async () => {
  await withDir(async (dir) => {
    // One delivery at a time, so the order of starts is the schedule's order.
    const cfg = testConfig(dir, `[relay]\nrelayhost = "127.0.0.1:9"\n`);
    cfg.queue.workers = 0;
    cfg.queue.relayConcurrency = 1;
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const a = await spoolMessage(spool, { from: "a@localhost", to: ["a@example.net"] });
    const b = await spoolMessage(spool, { from: "a@localhost", to: ["b@example.net"] });
    const c = await spoolMessage(spool, { from: "a@localhost", to: ["c@example.net"] });
    const d = await spoolMessage(spool, { from: "a@localhost", to: ["d@example.net"] });
    const order: string[] = [];
    const now = 1_000_000;
    const m = new QueueManager({
      config: cfg,
      spool,
      now: () => now,
      relay: (state, rcpts) => {
        order.push(state.envelope.id);
        return Promise.resolve(delivered(rcpts));
      },
    });
    // A blocker keeps the single slot busy while the others are scheduled.
    // All are due (the clock is past them): arrival order must not matter.
    m.enqueue(d, 1);
    m.enqueue(b, 200);
    m.enqueue(c, 300);
    m.enqueue(a, 100);
    m.enqueue(c, 50); // rescheduled earlier: its old entry is stale
    await m.idle();
    while (order.length < 4) {
      await new Promise((r) => setTimeout(r, 10));
      await m.idle();
    }
    await m.stop();
    assert.deepEqual(order, [d, c, a, b]);
    assert.deepEqual(await spool.list(), []);
  });
});
