/**
 * JournalWriter, the journal held open for a delivery pass: records land in
 * call order however many appends overlap, a line torn by a crash is
 * completed before the first new record, and a closed writer refuses more.
 */
import assert from "node:assert/strict";
import { JournalWriter } from "../lib/spool/journal_writer.ts";
import type { JournalRecord } from "../lib/spool/records.ts";
import { Spool } from "../lib/spool/spool.ts";

const encoder = new TextEncoder();

async function withMessage(fn: (spool: Spool, id: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-journal-writer-" });
  try {
    const spool = new Spool(dir);
    await spool.init();
    const w = await spool.begin();
    const content = encoder.encode("Subject: j\r\n\r\nbody\r\n");
    await w.write(content);
    await w.commit({
      id: w.id,
      from: "a@example.com",
      recipients: Array.from({ length: 20 }, (_, i) => ({ address: `r${i}@example.net` })),
      received: Date.now(),
      client: { address: "127.0.0.1", helo: "t" },
      protocol: "ESMTP",
      size: content.length,
    });
    await fn(spool, w.id);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function delivered(rcpt: number): JournalRecord {
  return { t: "delivered", rcpt, at: 1000 + rcpt, dsn: "2.0.0", text: "250 ok", relay: "r" };
}

Deno.test("overlapping appends all land, in call order, and replay", async () => {
  await withMessage(async (spool, id) => {
    const j = await JournalWriter.open(spool.path(id), id);
    await Promise.all(Array.from({ length: 20 }, (_, i) => j.append([delivered(i)])));
    await j.close();
    const state = await spool.load(id);
    assert.ok(state.recipients.every((r) => r.status === "delivered"));
    assert.equal(state.done, true);
    const text = await Deno.readTextFile(spool.path(id));
    const order = [...text.matchAll(/"rcpt":(\d+)/g)].map((m) => Number(m[1]));
    assert.deepEqual(order, Array.from({ length: 20 }, (_, i) => i));
  });
});

Deno.test("a torn last line is completed with the torn mark before the first append", async () => {
  await withMessage(async (spool, id) => {
    // What a kill in the middle of an append leaves: half a record, no newline.
    await Deno.writeTextFile(spool.path(id), '{"t":"delivered","rcpt":3,"at', { append: true });
    const j = await JournalWriter.open(spool.path(id), id);
    await j.append([delivered(0)]);
    await j.close();
    const state = await spool.load(id);
    assert.equal(state.recipients[0].status, "delivered");
    assert.equal(state.recipients[3].status, "pending", "the torn record does not count");
  });
});

Deno.test("append after close is refused; close is idempotent", async () => {
  await withMessage(async (spool, id) => {
    const j = await JournalWriter.open(spool.path(id), id);
    await j.close();
    await j.close();
    await assert.rejects(() => j.append([delivered(0)]), /after close/);
  });
});

Deno.test("with the spool's shared sync a result waits for it, a deferral does not", async () => {
  await withMessage(async (spool, id) => {
    let calls = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => release = r);
    const j = await JournalWriter.open(spool.path(id), id, () => {
      calls++;
      return gate;
    });
    let done = false;
    const result = j.append([delivered(0)]).then(() => done = true);
    await j.append([{ t: "deferred", rcpt: 1, at: 1, until: 2, dsn: "4.4.1", text: "later" }]);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false, "a delivered record is not durable before the shared sync returns");
    assert.equal(calls, 1);
    release();
    await result;
    await j.close();
    // The real one: the spool's syncfs (this machine has FFI), counted as a data sync.
    const shared = spool.sharedDataSync();
    assert.ok(shared);
    const before = spool.syncs.data;
    const k = await JournalWriter.open(spool.path(id), id, shared);
    await k.append([delivered(2)]);
    await k.close();
    assert.equal(spool.syncs.data, before + 1);
    assert.equal((await spool.load(id)).recipients[2].status, "delivered");
  });
});
