/**
 * Fuzzing of the outgoing SMTP client's parsers and builders: the reply
 * parser (whatever a server sends, it yields bounded, well-formed replies
 * or throws ReplyProtocolError, independently of how the bytes are split)
 * and the MAIL/RCPT line builders (whatever a spool file holds, a line that
 * leaves has no control character and parameters in the RFC 5321 grammar,
 * and a valid recipient comes back unchanged through the server's parser).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ClientReply,
  MAX_REPLY_LINE,
  MAX_REPLY_LINES,
  ReplyParser,
  ReplyProtocolError,
} from "../lib/smtp/client_reply.ts";
import { mailCommand, rcptCommand } from "../lib/smtp/client_params.ts";
import { parseMailFrom, parseRcptTo } from "../lib/smtp/command.ts";
import { mailParams, rcptParams } from "../lib/smtp/params.ts";
import { arbHostile, arbMailbox, arbRecipient, arbXtextText, runs } from "./fuzz_arbitraries.ts";

const enc = new TextEncoder();

/** Reply-like bytes: good lines, continuation lines, bare CR/LF, long lines, noise. */
const replyBytes = fc.array(
  fc.oneof(
    fc.constantFrom(
      "250 2.0.0 Ok\r\n",
      "250-smtp.example\r\n",
      "250-PIPELINING\r\n",
      "550 5.1.1 No such user\r\n",
      "451-4.3.0 first\r\n451 4.3.0 second\r\n",
      "250-a\r\n251 b\r\n",
      "220 x\n",
      "354 go\r",
      "\r\n",
      "199 low\r\n",
      "600 high\r\n",
      "250 \u0085\u202e\r\n",
      "250-" + "x".repeat(3000) + "\r\n",
    ),
    fc.string({ unit: "binary", maxLength: 30 }).map((s) => `250 ${s}\r\n`),
    fc.uint8Array({ maxLength: 20 }),
  ),
  { maxLength: 20 },
).map((parts) => {
  const bytes = parts.map((p) => typeof p === "string" ? enc.encode(p) : p);
  const out = new Uint8Array(bytes.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of bytes) out.set(b, at), at += b.length;
  return out;
});

/** Feeds the bytes in the given pieces; the replies, then "ERR" if the parser refused. */
function parseAll(bytes: Uint8Array, cuts: number[]): (ClientReply | "ERR")[] {
  const p = new ReplyParser();
  const out: (ClientReply | "ERR")[] = [];
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let from = 0;
  try {
    for (const to of [...points, bytes.length]) {
      p.push(bytes.subarray(from, to));
      from = to;
      for (let r = p.shift(); r; r = p.shift()) out.push(r);
    }
  } catch (e) {
    assert.ok(e instanceof ReplyProtocolError, String(e));
    for (let r = p.shift(); r; r = p.shift()) out.push(r);
    out.push("ERR");
  }
  return out;
}

Deno.test("fuzz: the reply parser gives bounded replies or ReplyProtocolError, however split", () => {
  fc.assert(
    fc.property(replyBytes, fc.array(fc.nat(), { maxLength: 12 }), (bytes, cuts) => {
      const whole = parseAll(bytes, []);
      assert.deepEqual(parseAll(bytes, cuts), whole);
      for (const r of whole) {
        if (r === "ERR") continue;
        assert.ok(r.code >= 200 && r.code <= 599, String(r.code));
        assert.ok(r.lines.length >= 1 && r.lines.length <= MAX_REPLY_LINES);
        for (const l of r.lines) {
          assert.ok(enc.encode(l).length <= MAX_REPLY_LINE);
          assert.ok(!/[\r\n]/.test(l), "no line end inside a reply line");
        }
        if (r.enhanced) assert.match(r.enhanced, /^[245]\.\d{1,3}\.\d{1,3}$/);
      }
    }),
    { numRuns: runs(1500) },
  );
});

Deno.test("fuzz: MAIL and RCPT lines never carry a control, whatever the spool holds", () => {
  const ext = new Map([["SIZE", "0"], ["DSN", ""], ["8BITMIME", ""], ["SMTPUTF8", ""]]);
  const field = fc.oneof(arbHostile, arbMailbox, arbXtextText);
  fc.assert(
    fc.property(
      field,
      field,
      fc.array(field, { maxLength: 3 }),
      field,
      field,
      (from, to, notify, orcpt, envid) => {
        const mail = mailCommand({
          from,
          recipients: [to],
          size: 1,
          content: () => Promise.reject(new Error("unused")),
          envid,
          ret: orcpt as "FULL",
          body8bit: true,
        }, { ext, utf8: true });
        const rcpt = rcptCommand(to, { notify, orcpt }, { dsn: true });
        for (const b of [mail, rcpt]) {
          if ("error" in b) {
            assert.ok(!/\p{Cc}/u.test(b.error), JSON.stringify(b.error));
            continue;
          }
          assert.ok(!/\p{Cc}/u.test(b.line), JSON.stringify(b.line));
          // After the path, only space-separated keyword[=value] words.
          const params = b.line.slice(b.line.indexOf(">") + 1).split(" ").slice(1);
          for (const p of params) {
            assert.match(p, /^[A-Za-z0-9][A-Za-z0-9-]*(=[\x21-\x3c\x3e-\x7e]+)?$/);
          }
        }
      },
    ),
    { numRuns: runs(2000) },
  );
});

Deno.test("fuzz: a valid recipient and ENVID come back unchanged through the server's parsers", () => {
  fc.assert(
    fc.property(arbRecipient, arbXtextText, (r, envid) => {
      const rcpt = rcptCommand(r.address, r, { dsn: true });
      assert.ok("line" in rcpt, JSON.stringify(rcpt));
      const parsed = parseRcptTo(rcpt.line.slice("RCPT ".length));
      assert.ok(!("code" in parsed), JSON.stringify(parsed));
      assert.equal(parsed.address, r.address);
      const p = rcptParams(parsed.params);
      assert.ok(!("code" in p));
      assert.deepEqual(p.notify, r.notify);
      assert.equal(p.orcpt, r.orcpt);
      const mail = mailCommand({
        from: "a@b.example",
        recipients: [],
        size: 5,
        content: () => Promise.reject(new Error("unused")),
        envid,
      }, { ext: new Map([["DSN", ""]]), utf8: false });
      assert.ok("line" in mail);
      const m = parseMailFrom(mail.line.slice("MAIL ".length));
      assert.ok(!("code" in m));
      const mp = mailParams(m.params, { maxSize: 10 });
      assert.ok(!("code" in mp));
      assert.equal(mp.envid, envid);
    }),
    { numRuns: runs(1000) },
  );
});
