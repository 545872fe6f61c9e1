/**
 * Property tests for the SMTP reader and parsers: message bodies survive
 * dot-stuffing and any chunking, BDAT chunks come back byte for byte, no
 * input makes the command, address, ESMTP parameter or xtext parsers throw,
 * xtext round-trips, and nothing a client sends can put CR, LF or another
 * control character into a command line, an address or a parameter. Counts
 * are for CI; FUZZ_RUNS scales them (`deno task fuzz`, docs/reliability.md).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type DataEvent, type LineEvent, SmtpInput } from "../lib/smtp/input.ts";
import { parseCommand, parseMailbox, parseMailFrom, parseRcptTo } from "../lib/smtp/command.ts";
import {
  decodeXtext,
  decodeXtextChecked,
  encodeXtext,
  mailParams,
  rcptParams,
} from "../lib/smtp/params.ts";
import { arbHostile, arbMailbox, arbXtextText, hostilePiece, runs } from "./fuzz_arbitraries.ts";

const CR = 0x0d;
const LF = 0x0a;
const CONTROL = /\p{Cc}/u;

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Cuts bytes at the given (sorted, deduplicated) offsets. */
function chunk(b: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (b.length + 1)))].sort((x, y) => x - y);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, b.length]) {
    if (p > from) out.push(b.slice(from, p));
    from = p;
  }
  return out;
}

/** Plays the session over the chunks; events normalised as in smtp_input_test.ts. */
function drive(chunks: Uint8Array[], maxLineLength: number): string[] {
  const input = new SmtpInput({ maxLineLength });
  const out: string[] = [];
  let data = false;
  let body: Uint8Array[] = [];
  for (const c of chunks) {
    input.push(c);
    while (true) {
      const ev: LineEvent | DataEvent | null = data ? input.nextData() : input.nextLine();
      if (ev === null) break;
      if (ev.kind === "line") {
        assert.ok(!/[\r\n]/.test(ev.line), "a line never holds CR or LF");
        out.push(`L:${ev.line}`);
        data = ev.line === "DATA";
      } else if (ev.kind === "data") {
        body.push(ev.bytes);
      } else if (ev.kind === "end") {
        const all = concat(body);
        assertCrlfClean(all);
        out.push(`D:${Array.from(all).join(",")}`, "END");
        body = [];
        data = false;
      } else if (data) {
        out.push(`DE:${ev.error}`);
        return out;
      } else out.push(`E:${ev.error}`);
    }
  }
  return out;
}

/** Content handed out is CRLF-terminated lines with no bare CR or LF. */
function assertCrlfClean(b: Uint8Array): void {
  for (let i = 0; i < b.length; i++) {
    if (b[i] === CR) assert.equal(b[i + 1], LF, `bare CR at ${i}`);
    if (b[i] === LF) assert.equal(b[i - 1], CR, `bare LF at ${i}`);
  }
  if (b.length > 0) assert.equal(b[b.length - 1], LF, "content ends with CRLF");
}

const enc = new TextEncoder();
/** A body line: no CR or LF; dots are common so stuffing is exercised. */
const lineArb = fc.oneof(
  fc.uint8Array({ maxLength: 40 }).map((l) => l.filter((x) => x !== CR && x !== LF)),
  fc.array(fc.constantFrom(0x2e, 0x61, 0x00, 0xff, 0x20), { maxLength: 6 }).map((a) =>
    Uint8Array.from(a)
  ),
);
const cutsArb = fc.array(fc.nat(), { maxLength: 30 });

Deno.test("fuzz: dot-stuffed bodies come back exactly, however chunked", () => {
  fc.assert(
    fc.property(fc.array(lineArb, { maxLength: 30 }), cutsArb, (lines, cuts) => {
      const crlf = Uint8Array.of(CR, LF);
      const body = concat(lines.flatMap((l) => [l, crlf]));
      // RFC 5321 §4.5.2: the client doubles a leading dot.
      const stuffed = lines.flatMap((l) =>
        l[0] === 0x2e ? [Uint8Array.of(0x2e), l, crlf] : [l, crlf]
      );
      const wire = concat([enc.encode("DATA\r\n"), ...stuffed, enc.encode(".\r\nQUIT\r\n")]);
      const events = drive(chunk(wire, cuts), 512);
      assert.deepEqual(events, ["L:DATA", `D:${Array.from(body).join(",")}`, "END", "L:QUIT"]);
    }),
    { numRuns: runs(1000) },
  );
});

/** Bytes an attacker would use: CR, LF, dots, DATA commands and noise. */
const hostileArb = fc.array(
  fc.oneof(
    fc.constantFrom("\r", "\n", ".", "\r\n", "\r\n.\r\n", "DATA\r\n", "\n.\n", "a", "\0"),
    fc.uint8Array({ maxLength: 12 }),
  ),
  { maxLength: 40 },
).map((parts) => concat(parts.map((p) => typeof p === "string" ? enc.encode(p) : p)));

Deno.test("fuzz: the reader never throws and its events do not depend on chunking", () => {
  fc.assert(
    fc.property(hostileArb, cutsArb, fc.integer({ min: 3, max: 24 }), (wire, cuts, max) => {
      const whole = drive([wire], max);
      assert.deepEqual(drive(chunk(wire, cuts), max), whole);
      assert.deepEqual(drive(chunk(wire, [...Array(wire.length).keys()]), max), whole);
    }),
    { numRuns: runs(1500) },
  );
});

/** Strings that look like MAIL/RCPT arguments, with hostile pieces mixed in. */
const argArb = fc.oneof(
  fc.string({ unit: "binary", maxLength: 60 }),
  fc.array(
    fc.oneof(
      fc.constantFrom(
        "FROM:",
        "TO:",
        "<",
        ">",
        "@",
        '"',
        "\\",
        ".",
        " ",
        "=",
        "[",
        "]",
        "IPv6:",
        "::",
        ":",
        ",",
        "\r\n",
        "\0",
        "\u202e",
        "é",
        "postmaster",
        "SIZE=1",
      ),
      fc.string({ unit: "binary", maxLength: 4 }),
    ),
    { maxLength: 16 },
  ).map((p) => p.join("")),
);

Deno.test("fuzz: the parsers never throw and never return control characters", () => {
  fc.assert(
    fc.property(argArb, (s) => {
      const cmd = parseCommand(s);
      if ("verb" in cmd) assert.ok(!cmd.arg.startsWith(" ") && !cmd.arg.endsWith(" "));
      for (const arg of [s, `FROM:<${s}>`, `TO:<${s}>`, `FROM:<a@b> ${s}`]) {
        for (const r of [parseMailFrom(arg), parseRcptTo(arg)]) {
          if ("code" in r) {
            assert.ok(r.code >= 500 && r.code < 600);
            continue;
          }
          assert.ok(!CONTROL.test(r.address), "address");
          for (const [k, v] of r.params) {
            assert.match(k, /^[A-Z0-9][A-Z0-9-]*$/);
            assert.ok(v === null || !CONTROL.test(v), "param value");
          }
        }
      }
      const m = parseMailbox(s);
      if (m) assert.ok(!CONTROL.test(m.local) && !CONTROL.test(m.domain), "mailbox");
    }),
    { numRuns: runs(4000) },
  );
});

/** ESMTP parameter words: known keywords with hostile, encoded and random values. */
const paramArb = fc.tuple(
  fc.constantFrom("SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "NOTIFY", "ORCPT", "X-Y"),
  fc.option(
    fc.oneof(
      fc.constantFrom("7BIT", "8BITMIME", "FULL", "HDRS", "NEVER", "SUCCESS,DELAY", "123"),
      arbXtextText.map(encodeXtext),
      arbMailbox.map((a) => `rfc822;${encodeXtext(a)}`),
      arbHostile,
    ),
    { nil: undefined },
  ),
).map(([k, v]) => v === undefined ? k : `${k}=${v}`);

Deno.test("fuzz: ESMTP parameters give a value or a 5xx, and never a control character", () => {
  fc.assert(
    fc.property(fc.array(paramArb, { maxLength: 5 }), arbMailbox, (words, addr) => {
      const tail = words.map((w) => " " + w).join("");
      const mail = parseMailFrom(`FROM:<${addr}>${tail}`);
      if (!("code" in mail)) {
        const p = mailParams(mail.params, { maxSize: 10_000 });
        if ("code" in p) assert.ok(p.code >= 500 && p.code < 600, JSON.stringify(p));
        else {
          assert.ok(p.envid === undefined || !CONTROL.test(p.envid), "ENVID");
          assert.ok(p.envid === undefined || p.envid.length <= 100, "ENVID length");
        }
      }
      const rcpt = parseRcptTo(`TO:<${addr}>${tail}`);
      if (!("code" in rcpt)) {
        const p = rcptParams(rcpt.params);
        if ("code" in p) assert.ok(p.code >= 500 && p.code < 600, JSON.stringify(p));
        else {
          assert.ok(p.orcpt === undefined || !CONTROL.test(p.orcpt), "ORCPT");
          for (const n of p.notify ?? []) assert.match(n, /^(NEVER|SUCCESS|FAILURE|DELAY)$/);
        }
      }
    }),
    { numRuns: runs(2000) },
  );
});

Deno.test("fuzz: xtext decoding never throws, is bounded and never yields a control", () => {
  const xtextArb = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.array(fc.oneof(hostilePiece, fc.constantFrom("+", "+C2", "+85", "+E2+80", "a", "é")), {
      maxLength: 12,
    }).map((a) => a.join("")),
  );
  fc.assert(
    fc.property(xtextArb, (s) => {
      const r = decodeXtextChecked(s);
      if ("error" in r) return;
      assert.ok(!CONTROL.test(r.text) && !r.text.includes("\uFFFD"), JSON.stringify(r.text));
      // Each "+XX" (three characters) is at most one octet: never longer than its input.
      assert.ok(r.text.length <= s.length);
    }),
    { numRuns: runs(3000) },
  );
});

Deno.test("fuzz: xtext round-trips: decode(encode(text)) is the text, in pure ASCII", () => {
  fc.assert(
    fc.property(arbXtextText, (text) => {
      const wire = encodeXtext(text);
      assert.match(wire, /^[\x21-\x7e]*$/);
      assert.ok(!/[ =]/.test(wire));
      assert.equal(decodeXtext(wire), text);
    }),
    { numRuns: runs(2000) },
  );
});

Deno.test("fuzz: BDAT chunks are taken byte for byte and the next command follows", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 300 }),
      cutsArb,
      fc.integer({ min: 1, max: 64 }),
      (data, cuts, max) => {
        // "BDAT n LAST" then exactly n raw octets (no line or dot handling), then a command.
        const wire = concat([
          enc.encode(`BDAT ${data.length} LAST\r\n`),
          data,
          enc.encode("QUIT\r\n"),
        ]);
        const input = new SmtpInput({ maxLineLength: 512 });
        const got: Uint8Array[] = [];
        const lines: string[] = [];
        let want = 0;
        for (const c of chunk(wire, cuts)) {
          input.push(c);
          while (true) {
            if (want > 0) {
              const b = input.take(Math.min(want, max));
              if (b === null) break;
              assert.ok(b.length <= Math.min(want, max), "take is bounded");
              got.push(b.slice());
              want -= b.length;
              continue;
            }
            const ev = input.nextLine();
            if (ev === null) break;
            assert.equal(ev.kind, "line");
            if (ev.kind !== "line") break;
            lines.push(ev.line);
            const m = /^BDAT (\d+)/.exec(ev.line);
            if (m) want = Number(m[1]);
          }
        }
        assert.deepEqual(lines, [`BDAT ${data.length} LAST`, "QUIT"]);
        assert.deepEqual(concat(got), data);
      },
    ),
    { numRuns: runs(1000) },
  );
});
