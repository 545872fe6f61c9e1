/**
 * The control journal's parser and replay: table tests, the torn-line rules
 * and a property that a journal cut at any byte reads as a prefix of its
 * records — what a crash mid-append can leave behind.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  encodeRecords,
  type Envelope,
  type JournalRecord,
  parseJournal,
  replay,
  TORN_MARK,
} from "../lib/spool/mod.ts";
import { arbEnvelope as arbValidEnvelope, runs } from "./fuzz_arbitraries.ts";
import { quote } from "../lib/smtp/envelope_check.ts";

const ENVELOPE: Envelope = {
  id: "0000000000000ABCD",
  from: "alice@example.org",
  recipients: [
    { address: "bob@example.net", notify: ["FAILURE", "DELAY"], orcpt: "rfc822;bob@example.net" },
    { address: "carol@example.com" },
    { address: "dave@example.com" },
  ],
  received: 1_700_000_000_000,
  client: { address: "192.0.2.7", helo: "mx.example.org", auth: "alice" },
  protocol: "ESMTP",
  size: 42,
  params: { BODY: "8BITMIME" },
};
const ENV_RECORD: JournalRecord = { t: "envelope", ...ENVELOPE };

function deferred(rcpt: number, at: number, until: number): JournalRecord {
  return { t: "deferred", rcpt, at, until, dsn: "4.4.1", text: "Connection refused" };
}
function delivered(rcpt: number, at: number): JournalRecord {
  return { t: "delivered", rcpt, at, dsn: "2.0.0", text: "250 Ok", relay: "mx.example.net" };
}
function failed(rcpt: number, at: number): JournalRecord {
  return { t: "failed", rcpt, at, dsn: "5.1.1", text: "550 No such user" };
}
function text(records: JournalRecord[]): string {
  return new TextDecoder().decode(encodeRecords(records));
}

Deno.test("parseJournal: table", async (t) => {
  const good = text([ENV_RECORD, deferred(0, 1, 2)]);
  const cases: { name: string; input: string; want: JournalRecord[] | RegExp }[] = [
    { name: "empty", input: "", want: [] },
    { name: "envelope and a result", input: good, want: [ENV_RECORD, deferred(0, 1, 2)] },
    { name: "torn last line", input: good + '{"t":"deliv', want: [ENV_RECORD, deferred(0, 1, 2)] },
    {
      name: "unterminated but parsable last line",
      input: good + JSON.stringify(delivered(1, 5)),
      want: [ENV_RECORD, deferred(0, 1, 2)],
    },
    {
      name: "repaired torn line in the middle",
      input: good + '{"t":"deliv' + TORN_MARK + "\n" + text([failed(1, 9)]),
      want: [ENV_RECORD, deferred(0, 1, 2), failed(1, 9)],
    },
    {
      name: "parsable record with the mark is still skipped",
      input: text([ENV_RECORD]).slice(0, -1) + TORN_MARK + "\n",
      want: [],
    },
    {
      name: "bad line in the middle",
      input: good.replace("\n", "\nxx\n"),
      want: /line 2 is not JSON/,
    },
    { name: "bad first line", input: "garbage\n", want: /line 1 is not JSON/ },
    { name: "unknown record type", input: '{"t":"bounced"}\n', want: /line 1: .*unknown type/ },
    { name: "array line", input: "[1]\n", want: /line 1: Record is not an object/ },
    {
      name: "missing field",
      input: good + '{"t":"failed","rcpt":0,"at":1,"dsn":"5.0.0"}\n',
      want: /line 3: Record "failed" has a bad text/,
    },
    {
      name: "fractional rcpt",
      input: good + JSON.stringify({ ...failed(0, 1), rcpt: 0.5 }) + "\n",
      want: /line 3: .*bad rcpt/,
    },
    {
      name: "delivered needs a relay",
      input: good + JSON.stringify({ ...delivered(0, 1), relay: undefined }) + "\n",
      want: /bad relay/,
    },
    {
      name: "envelope with a bad recipient",
      input: JSON.stringify({ ...ENV_RECORD, recipients: [{ address: 5 }] }) + "\n",
      want: /bad recipients/,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      if (c.want instanceof RegExp) {
        assert.throws(() => parseJournal(c.input), c.want);
      } else {
        assert.deepEqual(parseJournal(c.input), c.want);
      }
    });
  }
});

Deno.test("encodeRecords refuses records it could not read back", () => {
  assert.throws(
    () => encodeRecords([{ ...ENV_RECORD, received: NaN }]),
    /Record "envelope" has a bad received/,
  );
  assert.throws(() => encodeRecords([{ t: "nope" } as unknown as JournalRecord]), /unknown type/);
});

Deno.test("result strings with CR/LF cannot break the line format", () => {
  const nasty = 'evil\r\n{"t":"delivered"}\n\u2028\u0000\t' + TORN_MARK;
  const bad: JournalRecord = { t: "failed", rcpt: 0, at: 1, dsn: nasty, text: nasty, relay: nasty };
  const out = text([ENV_RECORD, bad]);
  assert.equal(out.split("\n").length, 3); // two lines and the "" after the last "\n"
  assert.ok(!out.includes("\r"));
  assert.ok(!out.includes("\t"));
  assert.deepEqual(parseJournal(out), [ENV_RECORD, bad]);
});

Deno.test("an envelope field no SMTP client could send is refused on write and on read", () => {
  const nasty = 'evil\r\n{"t":"delivered"}\n\u2028\u0000\t' + TORN_MARK;
  const cases: [string, Partial<Envelope>][] = [
    ["from", { from: nasty }],
    ["recipient 1", { recipients: [{ address: nasty }] }],
    ["recipient 1 ORCPT", { recipients: [{ address: "a@b.example", orcpt: nasty }] }],
    ["recipient 1 NOTIFY", { recipients: [{ address: "a@b.example", notify: [nasty] }] }],
    ["client.address", { client: { address: nasty, helo: "h" } }],
    ["client.helo", { client: { address: "192.0.2.1", helo: nasty } }],
    ["client.auth", { client: { address: "192.0.2.1", helo: "h", auth: nasty } }],
    [`params.${quote(nasty)}`, { params: { [nasty]: "x" } }],
    ["params.ENVID", { params: { ENVID: nasty } }],
  ];
  for (const [field, change] of cases) {
    const env: JournalRecord = { ...ENV_RECORD, ...change };
    assert.throws(() => encodeRecords([env]), { name: "EnvelopeError", field }, field);
    // A hand-edited journal: JSON.stringify writes the line encodeRecords would refuse.
    assert.throws(
      () => parseJournal(JSON.stringify(env) + "\n"),
      (e: Error) => e.name === "JournalError" && e.message.includes(`Bad envelope ${field}:`),
      field,
    );
  }
});

Deno.test("replay: envelope only", () => {
  const s = replay([ENV_RECORD]);
  assert.deepEqual(s.envelope, ENVELOPE);
  assert.equal(s.done, false);
  assert.equal(s.nextAttempt, 0);
  assert.deepEqual(
    s.recipients.map((r) => [r.index, r.address, r.status, r.attempts, r.nextAttempt]),
    [
      [0, "bob@example.net", "pending", 0, 0],
      [1, "carol@example.com", "pending", 0, 0],
      [2, "dave@example.com", "pending", 0, 0],
    ],
  );
});

Deno.test("replay: deferred then delivered, attempts and nextAttempt", async (t) => {
  const cases: {
    name: string;
    records: JournalRecord[];
    status: string[];
    attempts: number[];
    next: number[];
    nextAttempt: number;
    done: boolean;
  }[] = [
    {
      name: "one deferral, others pending",
      records: [deferred(0, 10, 1000)],
      status: ["deferred", "pending", "pending"],
      attempts: [1, 0, 0],
      next: [1000, 0, 0],
      nextAttempt: 0,
      done: false,
    },
    {
      name: "nextAttempt is the min over open recipients",
      records: [deferred(0, 10, 3000), deferred(1, 10, 2000), failed(2, 11)],
      status: ["deferred", "deferred", "failed"],
      attempts: [1, 1, 0],
      next: [3000, 2000, 0],
      nextAttempt: 2000,
      done: false,
    },
    {
      name: "deferred twice then delivered",
      records: [
        deferred(0, 10, 100),
        deferred(0, 100, 500),
        delivered(0, 500),
        delivered(1, 10),
        deferred(2, 10, 900),
      ],
      status: ["delivered", "delivered", "deferred"],
      attempts: [2, 0, 1],
      next: [0, 0, 900],
      nextAttempt: 900,
      done: false,
    },
    {
      name: "all final",
      records: [deferred(0, 10, 100), failed(0, 100), delivered(1, 10), delivered(2, 10)],
      status: ["failed", "delivered", "delivered"],
      attempts: [1, 0, 0],
      next: [0, 0, 0],
      nextAttempt: 0,
      done: true,
    },
    {
      name: "a final result is sticky",
      records: [delivered(0, 10), deferred(0, 20, 999), failed(0, 30)],
      status: ["delivered", "pending", "pending"],
      attempts: [0, 0, 0],
      next: [0, 0, 0],
      nextAttempt: 0,
      done: false,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const s = replay([ENV_RECORD, ...c.records]);
      assert.deepEqual(s.recipients.map((r) => r.status), c.status);
      assert.deepEqual(s.recipients.map((r) => r.attempts), c.attempts);
      assert.deepEqual(s.recipients.map((r) => r.nextAttempt), c.next);
      assert.equal(s.nextAttempt, c.nextAttempt);
      assert.equal(s.done, c.done);
      for (const r of s.recipients) {
        assert.deepEqual(
          r.history,
          c.records.filter((x) => x.t !== "envelope" && x.rcpt === r.index),
        );
      }
    });
  }
});

Deno.test("replay: last result's dsn and text", () => {
  const s = replay([ENV_RECORD, deferred(1, 1, 2), failed(1, 3)]);
  assert.equal(s.recipients[1].dsn, "5.1.1");
  assert.equal(s.recipients[1].text, "550 No such user");
  assert.equal(s.recipients[0].dsn, undefined);
});

Deno.test("replay: malformed journals throw", () => {
  assert.throws(() => replay([]), /does not start with an envelope/);
  assert.throws(() => replay([failed(0, 1)]), /does not start with an envelope/);
  assert.throws(() => replay([ENV_RECORD, ENV_RECORD]), /second envelope/);
  assert.throws(() => replay([ENV_RECORD, failed(3, 1)]), /recipient 3 of 3/);
  assert.throws(() => replay([ENV_RECORD, failed(-1, 1)]), /recipient -1 of 3/);
});

const str = fc.string({ unit: "binary", maxLength: 12 });
const time = fc.integer({ min: 0, max: 2 ** 45 });
/** Envelopes the SMTP server could write (the journal refuses any other, see envelope_check). */
const arbEnvelope: fc.Arbitrary<JournalRecord> = arbValidEnvelope.map((e) => ({
  t: "envelope" as const,
  ...e,
}));
const arbResult: fc.Arbitrary<JournalRecord> = fc.oneof(
  fc.record({
    t: fc.constant("delivered" as const),
    rcpt: fc.nat(3),
    at: time,
    dsn: str,
    text: str,
    relay: str,
  }),
  fc.record({
    t: fc.constant("deferred" as const),
    rcpt: fc.nat(3),
    at: time,
    until: time,
    dsn: str,
    text: str,
    relay: str,
  }, { requiredKeys: ["t", "rcpt", "at", "until", "dsn", "text"] }),
  fc.record({
    t: fc.constant("failed" as const),
    rcpt: fc.nat(3),
    at: time,
    dsn: str,
    text: str,
    relay: str,
  }, { requiredKeys: ["t", "rcpt", "at", "dsn", "text"] }),
);
/** fast-check builds null-prototype objects; a journal holds what JSON gives back. */
const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v));
const arbJournal = fc.tuple(arbEnvelope, fc.array(arbResult, { maxLength: 6 }))
  .map(([e, rs]) => plain([e, ...rs]));
const arbResults = fc.array(arbResult, { minLength: 1, maxLength: 3 }).map(plain);

/** How many whole lines (records) the first `cut` bytes hold. */
function completeLines(bytes: Uint8Array, cut: number): number {
  let n = 0;
  for (let i = 0; i < cut; i++) if (bytes[i] === 0x0a) n++;
  return n;
}

Deno.test("property: a journal cut at any byte reads as a prefix of its records", () => {
  fc.assert(
    fc.property(arbJournal, fc.double({ min: 0, max: 1, noNaN: true }), (records, where) => {
      const bytes = encodeRecords(records);
      const cut = Math.floor(where * bytes.length);
      const got = parseJournal(new TextDecoder().decode(bytes.subarray(0, cut)));
      assert.deepEqual(got, records.slice(0, completeLines(bytes, cut)));
    }),
    { numRuns: runs(500) },
  );
});

Deno.test("property: cut, repaired by the next append, reads as prefix plus the append", () => {
  fc.assert(
    fc.property(
      arbJournal,
      arbResults,
      fc.double({ min: 0, max: 1, noNaN: true }),
      (records, later, where) => {
        const bytes = encodeRecords(records);
        const first = encodeRecords(records.slice(0, 1)).length;
        // A cut inside the envelope line cannot happen: it is synced before commit.
        const cut = first + Math.floor(where * (bytes.length - first));
        let journal = new TextDecoder().decode(bytes.subarray(0, cut));
        // What Spool.append does: complete a torn last line with the mark.
        if (!journal.endsWith("\n")) journal += TORN_MARK + "\n";
        journal += new TextDecoder().decode(encodeRecords(later));
        const got = parseJournal(journal);
        assert.deepEqual(got, [...records.slice(0, completeLines(bytes, cut)), ...later]);
      },
    ),
    { numRuns: runs(500) },
  );
});

Deno.test("property: any parsed journal's replay accounts for every result", () => {
  fc.assert(
    fc.property(arbJournal, (records) => {
      const env = records[0] as Envelope & { t: "envelope" };
      const valid = records.filter((r) => r.t === "envelope" || r.rcpt < env.recipients.length);
      const s = replay(parseJournal(new TextDecoder().decode(encodeRecords(valid))));
      assert.equal(s.recipients.reduce((n, r) => n + r.history.length, 0), valid.length - 1);
      const open = s.recipients.filter((r) => r.status === "pending" || r.status === "deferred");
      assert.equal(s.done, open.length === 0);
      if (open.length) assert.equal(s.nextAttempt, Math.min(...open.map((r) => r.nextAttempt)));
    }),
    { numRuns: runs(300) },
  );
});
