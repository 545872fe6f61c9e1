/**
 * The short crash torture run in CI (scripts/torture.ts; the long one is
 * `deno task torture --kills 100`): 8 parallel senders, 10 `kill -9`s of
 * skiff's whole process group at random moments, restart on the same
 * spool, drain. Every message that got a 250 must reach the sink; extra
 * copies are allowed (at-least-once) and printed.
 */
import assert from "node:assert/strict";
import { runTorture } from "../scripts/torture.ts";

Deno.test({
  name:
    "crash torture: 10 kill -9s of skiff's process group under 8 senders lose no accepted message",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const f = await runTorture({
      kills: 10,
      senders: 8,
      minMs: 300,
      maxMs: 1500,
      drainSeconds: 60,
    });
    console.log(JSON.stringify(f));
    assert.equal(f.kills, 10);
    assert.ok(f.accepted > 0, "the senders got some messages accepted");
    assert.equal(f.leftInQueue, 0, "the queue drained");
    assert.equal(f.lost, 0, "no accepted message is lost");
    assert.ok(f.delivered === f.accepted);
  },
});
