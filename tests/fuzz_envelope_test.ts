/**
 * Fuzzing of everything that reads an envelope that did not come over SMTP:
 * the envelope validator, the maildrop file format and journal replay.
 * Properties: whatever the SMTP server accepts, the validator accepts (so
 * the server never writes an envelope it would refuse to read); nothing
 * hostile passes it; the parsers throw only their own error types; valid
 * inputs round-trip. Counts are for CI; FUZZ_RUNS scales them.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeDrop,
  type DropEnvelope,
  encodeDrop,
  MaildropError,
} from "../lib/maildrop/format.ts";
import { parseMailFrom, parseRcptTo } from "../lib/smtp/command.ts";
import { checkEnvelope, EnvelopeError } from "../lib/smtp/envelope_check.ts";
import { encodeXtext, mailParams, rcptParams } from "../lib/smtp/params.ts";
import {
  encodeRecords,
  type Envelope,
  JournalError,
  type JournalRecord,
  parseJournal,
  replay,
} from "../lib/spool/mod.ts";
import {
  arbEnvelope,
  arbHostile,
  arbMailbox,
  arbNotify,
  arbXtextText,
  runs,
} from "./fuzz_arbitraries.ts";

const CONTROL = /\p{Cc}/u;

function strings(v: unknown, out: string[] = []): string[] {
  if (typeof v === "string") out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => strings(x, out));
  else if (v && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) out.push(k), strings(x, out);
  }
  return out;
}

/** A MAIL or RCPT argument tail: plausible parameters, some hostile. */
const tail = (keys: string[]) =>
  fc.array(
    fc.tuple(
      fc.constantFrom(...keys),
      fc.oneof(
        fc.constantFrom("7BIT", "8bitmime", "full", "HDRS", "never", "SUCCESS,delay", "1"),
        arbXtextText.map(encodeXtext),
        arbXtextText,
        arbMailbox.map((a) => `RFC822;${encodeXtext(a)}`),
        arbHostile,
      ),
    ).map(([k, v]) => k === "SMTPUTF8" ? " SMTPUTF8" : ` ${k}=${v}`),
    { maxLength: 4 },
  ).map((a) => a.join(""));

Deno.test("fuzz: whatever the SMTP server accepts, the envelope validator accepts", () => {
  const path = fc.oneof(
    arbMailbox,
    arbHostile,
    fc.constantFrom("@relay.example:a@b.example", "Postmaster", ""),
  );
  fc.assert(
    fc.property(
      path,
      tail(["BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "SIZE"]),
      fc.array(fc.tuple(path, tail(["NOTIFY", "ORCPT"])), { minLength: 1, maxLength: 3 }),
      (from, mailTail, rcpts) => {
        const mail = parseMailFrom(`FROM:<${from}>${mailTail}`);
        if ("code" in mail) return;
        const mp = mailParams(mail.params, { maxSize: 1e9 });
        if ("code" in mp) return;
        const recipients = [];
        for (const [to, rcptTail] of rcpts) {
          const r = parseRcptTo(`TO:<${to}>${rcptTail}`);
          if ("code" in r) continue;
          const rp = rcptParams(r.params);
          if ("code" in rp) continue;
          recipients.push({ address: r.address, ...rp });
        }
        if (recipients.length === 0) return;
        // As receive.ts writes it (envelopeParams).
        const params: Record<string, string> = {};
        if (mp.body) params.BODY = mp.body;
        if (mp.smtputf8) params.SMTPUTF8 = "yes";
        if (mp.ret) params.RET = mp.ret;
        if (mp.envid !== undefined) params.ENVID = mp.envid;
        const env: Envelope = {
          id: "0000000000000ABCD",
          from: mail.address,
          recipients,
          received: 1,
          client: { address: "127.0.0.1", helo: "client.example" },
          protocol: "ESMTP",
          size: 10,
          params,
        };
        checkEnvelope(env);
        // And it is written and read back unchanged.
        const plain = JSON.parse(JSON.stringify({ t: "envelope", ...env }));
        assert.deepEqual(parseJournal(new TextDecoder().decode(encodeRecords([plain]))), [plain]);
      },
    ),
    { numRuns: runs(1500) },
  );
});

/** One field of a valid envelope replaced by a hostile string. */
const mutated = fc.tuple(arbEnvelope, fc.nat(9), arbHostile).map(([e, which, bad]) => {
  const env = structuredClone(e) as Envelope;
  const r = env.recipients[0];
  switch (which) {
    case 0:
      env.from = bad;
      break;
    case 1:
      r.address = bad;
      break;
    case 2:
      r.notify = [bad];
      break;
    case 3:
      r.orcpt = `rfc822;${bad}`;
      break;
    case 4:
      env.client.helo = bad;
      break;
    case 5:
      env.client.auth = bad;
      break;
    case 6:
      env.params = { ...env.params, ENVID: bad };
      break;
    case 7:
      env.params = { ...env.params, RET: bad };
      break;
    case 8:
      env.params = { ...env.params, [bad]: "x" };
      break;
    default:
      env.client.address = bad;
  }
  return env;
});

Deno.test("fuzz: the validator throws only EnvelopeError; what passes holds no control", () => {
  fc.assert(
    fc.property(mutated, (env) => {
      try {
        checkEnvelope(env);
      } catch (e) {
        assert.ok(e instanceof EnvelopeError, String(e));
        assert.match(e.message, /^Bad envelope \S.*: /s);
        // Errors reach logs: the bad value is quoted, never raw.
        assert.ok(!CONTROL.test(e.message) && !CONTROL.test(e.field), JSON.stringify(e.message));
        return;
      }
      for (const s of strings(env)) assert.ok(!CONTROL.test(s), JSON.stringify(s));
      // Nothing that passes can end a command line or add a parameter.
      for (const r of env.recipients) for (const n of r.notify ?? []) assert.ok(!/[ \r\n]/.test(n));
    }),
    { numRuns: runs(1500) },
  );
});

Deno.test("fuzz: valid envelopes pass and round-trip through the journal", () => {
  fc.assert(
    fc.property(arbEnvelope, (env) => {
      checkEnvelope(env);
      const rec = { t: "envelope" as const, ...env };
      const back = parseJournal(new TextDecoder().decode(encodeRecords([rec])));
      assert.deepEqual(back, [rec]);
      assert.deepEqual(replay(back).envelope, env);
    }),
    { numRuns: runs(400) },
  );
});

/** Journal text: valid lines, hostile JSON, truncations and garbage, in any order. */
const journalText = fc.tuple(
  arbEnvelope,
  fc.array(
    fc.oneof(
      fc.constantFrom(
        '{"t":"delivered","rcpt":0,"at":1,"dsn":"2.0.0","text":"ok","relay":"r"}',
        '{"t":"deferred","rcpt":0,"at":1,"until":2,"dsn":"4.0.0","text":"x"}',
        '{"t":"failed","rcpt":9,"at":1,"dsn":"5.0.0","text":"x"}',
        '{"t":"notified","rcpt":0,"at":1,"action":"failed","id":"X"}',
        '{"t":"envelope"}',
        "\t#torn",
        "[]",
        "null",
        "",
      ),
      fc.json({ maxDepth: 2 }),
      fc.string({ unit: "binary", maxLength: 30 }),
    ),
    { maxLength: 6 },
  ),
  fc.nat(),
).map(([env, lines, cut]) => {
  const text = [JSON.stringify({ t: "envelope", ...env }), ...lines].join("\n") + "\n";
  return text.slice(0, text.length - (cut % 4));
});

Deno.test("fuzz: journal parsing and replay throw only JournalError", () => {
  fc.assert(
    fc.property(fc.oneof(journalText, fc.string({ unit: "binary", maxLength: 80 })), (text) => {
      let records: JournalRecord[];
      try {
        records = parseJournal(text);
        if (records.length > 0) replay(records);
      } catch (e) {
        assert.ok(e instanceof JournalError, String(e));
      }
    }),
    { numRuns: runs(1500) },
  );
});

/** A valid drop envelope, as the sendmail shim writes it. */
const arbDrop: fc.Arbitrary<DropEnvelope> = fc.record({
  from: fc.oneof(fc.constant(""), arbMailbox),
  recipients: fc.array(
    fc.record({ address: arbMailbox, notify: arbNotify }, { requiredKeys: ["address"] }),
    { minLength: 1, maxLength: 3 },
  ),
  params: fc.record({
    RET: fc.constantFrom("FULL", "HDRS"),
    ENVID: fc.stringMatching(/^[\x21-\x7e]{1,100}$/),
    BODY: fc.constantFrom("7BIT", "8BITMIME"),
  }, { requiredKeys: [] }),
}, { requiredKeys: ["from", "recipients"] }).map((e) => JSON.parse(JSON.stringify(e)));

Deno.test("fuzz: maildrop files round-trip; damaged ones throw only MaildropError", () => {
  const enc = new TextEncoder();
  fc.assert(
    fc.property(
      arbDrop,
      fc.uint8Array({ maxLength: 40 }),
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }),
      arbHostile,
      (env, content, flips, bad) => {
        const file = encodeDrop(env, content);
        assert.deepEqual(decodeDrop(file), { envelope: env, content });
        // Flipped bytes, a hostile string spliced into the JSON, or random bytes.
        const damaged = file.slice();
        for (const [at, b] of flips) damaged[at % damaged.length] = b;
        const json = JSON.stringify(env);
        const spliced = enc.encode(
          `skiff-maildrop 1\n${
            json.replace(/"[^"]*"/g, (m) => m.length > 2 ? JSON.stringify(bad) : m)
          }\n`,
        );
        for (const bytes of [damaged, spliced, content]) {
          try {
            const d = decodeDrop(bytes);
            for (const s of strings(d.envelope)) assert.ok(!CONTROL.test(s), JSON.stringify(s));
          } catch (e) {
            assert.ok(e instanceof MaildropError, String(e));
          }
        }
      },
    ),
    { numRuns: runs(800) },
  );
});
