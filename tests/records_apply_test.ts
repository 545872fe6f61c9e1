/**
 * applyRecords(): the queue manager folds what a delivery pass journaled
 * into the state it read instead of reading the journal back. It must give
 * exactly what replay() of the whole journal gives, for any records and any
 * point the pass started at — or a retry, a bounce or a removal would be
 * decided on a state the disk does not hold.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { applyRecords, type JournalRecord, replay } from "../lib/spool/records.ts";
import type { Envelope } from "../lib/spool/envelope.ts";

const ENVELOPE: Envelope = {
  id: "0000000000000ABCD",
  from: "alice@example.org",
  recipients: [
    { address: "bob@example.net" },
    { address: "carol@example.com" },
    { address: "dave@example.com" },
  ],
  received: 1_700_000_000_000,
  client: { address: "192.0.2.7", helo: "mx.example.org" },
  protocol: "ESMTP",
  size: 42,
};

const arbRecord: fc.Arbitrary<JournalRecord> = fc.integer({ min: 0, max: 2 }).chain((rcpt) =>
  fc.integer({ min: 1, max: 1_000_000 }).chain((at) =>
    fc.oneof(
      fc.constant<JournalRecord>({
        t: "delivered",
        rcpt,
        at,
        dsn: "2.0.0",
        text: "ok",
        relay: "x",
      }),
      fc.integer({ min: 0, max: 2_000_000 }).map((until): JournalRecord => ({
        t: "deferred",
        rcpt,
        at,
        until,
        dsn: "4.4.1",
        text: "later",
      })),
      fc.constant<JournalRecord>({ t: "failed", rcpt, at, dsn: "5.1.1", text: "no" }),
      fc.constantFrom("failed", "delayed", "delivered", "relayed" as const).map(
        (action): JournalRecord => ({ t: "notified", rcpt, at, action, id: "0000000000000BCDE" }),
      ),
    )
  )
);

Deno.test("applyRecords after any prefix equals replay of the whole journal", () => {
  fc.assert(
    fc.property(fc.array(arbRecord, { maxLength: 30 }), fc.nat(), (records, cut) => {
      const all: JournalRecord[] = [{ t: "envelope", ...ENVELOPE }, ...records];
      const at = 1 + (cut % (records.length + 1));
      const before = replay(all.slice(0, at));
      const snapshot = structuredClone(before);
      assert.deepEqual(applyRecords(before, all.slice(at)), replay(all));
      // The state it started from is left as it was (the caller may still hold it).
      assert.deepEqual(before, snapshot);
    }),
    { numRuns: 500 },
  );
});

Deno.test("applyRecords keeps a final result sticky and refuses a second envelope", () => {
  const state = replay([{ t: "envelope", ...ENVELOPE }]);
  const after = applyRecords(state, [
    { t: "delivered", rcpt: 0, at: 1, dsn: "2.0.0", text: "ok", relay: "x" },
    { t: "deferred", rcpt: 0, at: 2, until: 99, dsn: "4.4.1", text: "late" },
  ]);
  assert.equal(after.recipients[0].status, "delivered");
  assert.equal(after.recipients[0].history.length, 2);
  assert.equal(after.done, false);
  assert.throws(
    () => applyRecords(state, [{ t: "envelope", ...ENVELOPE }]),
    /has a second envelope/,
  );
  assert.throws(
    () => applyRecords(state, [{ t: "failed", rcpt: 7, at: 1, dsn: "5.0.0", text: "x" }]),
    /recipient 7 of 3/,
  );
});
