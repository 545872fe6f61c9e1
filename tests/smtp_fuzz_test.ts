/**
 * Property tests for the SMTP reader and parsers: message bodies survive
 * dot-stuffing and any chunking, no input makes them throw, and nothing a
 * client sends can put CR, LF or another control character into a command
 * line, an address or a parameter.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { type DataEvent, type LineEvent, SmtpInput } from "../lib/smtp/input.ts";
import { parseCommand, parseMailbox, parseMailFrom, parseRcptTo } from "../lib/smtp/command.ts";

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
    { numRuns: 1000 },
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
    { numRuns: 1500 },
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
    { numRuns: 4000 },
  );
});
