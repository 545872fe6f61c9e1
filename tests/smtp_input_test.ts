/**
 * Table tests for the strict SMTP reader: every input is fed whole, one byte
 * at a time and split at every point, and must give the same events, since a
 * reader that depends on where TCP splits the stream is a smuggling hole.
 */

import assert from "node:assert/strict";
import { SmtpInput } from "../lib/smtp/input.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Plays the session: commands until a "DATA" line, then content until the
 * end marker. Events are normalised so different chunkings compare equal:
 * adjacent data is joined, and data right before a data error is dropped
 * (the session throws it away; how much came first depends on the split).
 */
function run(chunks: Uint8Array[], maxLineLength = 64): string[] {
  const input = new SmtpInput({ maxLineLength });
  const out: string[] = [];
  let data = false;
  let text = "";
  for (const chunk of chunks) {
    input.push(chunk);
    while (true) {
      if (!data) {
        const ev = input.nextLine();
        if (ev === null) break;
        if (ev.kind === "error") out.push(`E:${ev.error}`);
        else {
          out.push(`L:${ev.line}`);
          if (ev.line === "DATA") data = true;
        }
        continue;
      }
      const ev = input.nextData();
      if (ev === null) break;
      if (ev.kind === "data") text += dec.decode(ev.bytes);
      else if (ev.kind === "end") {
        if (text) out.push(`D:${text}`);
        out.push("END");
        text = "";
        data = false;
      } else {
        out.push(`DE:${ev.error}`);
        return out;
      }
    }
  }
  if (text) out.push(`D:${text}`);
  return out;
}

function bytes(s: string): Uint8Array {
  // Inputs are written one character per byte, so "\xff" is a raw 0xff byte.
  return Uint8Array.from(s, (c) => {
    assert.ok(c.charCodeAt(0) <= 0xff, "test inputs are byte strings");
    return c.charCodeAt(0);
  });
}

/** Runs the input whole, byte by byte, and split in two at every point. */
function allSplits(s: string, maxLineLength?: number): string[] {
  const b = bytes(s);
  const whole = run([b], maxLineLength);
  const single = run(Array.from(b, (x) => Uint8Array.of(x)), maxLineLength);
  assert.deepEqual(single, whole, "byte at a time");
  for (let i = 1; i < b.length; i++) {
    const split = run([b.slice(0, i), b.slice(i)], maxLineLength);
    assert.deepEqual(split, whole, `split at ${i}`);
  }
  return whole;
}

const CASES: [name: string, input: string, expect: string[], max?: number][] = [
  ["one command", "NOOP\r\n", ["L:NOOP"]],
  ["incomplete line waits", "NOOP\r", []],
  ["empty line", "\r\nQUIT\r\n", ["L:", "L:QUIT"]],
  [
    "pipelined transaction",
    "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    [
      "L:EHLO x",
      "L:MAIL FROM:<a@b>",
      "L:RCPT TO:<c@d>",
      "L:DATA",
      "D:Subject: hi\r\n\r\nbody\r\n",
      "END",
      "L:QUIT",
    ],
  ],
  ["empty data", "DATA\r\n.\r\nNOOP\r\n", ["L:DATA", "END", "L:NOOP"]],
  ["data of one empty line", "DATA\r\n\r\n.\r\n", ["L:DATA", "D:\r\n", "END"]],
  [
    "two transactions",
    "DATA\r\na\r\n.\r\nDATA\r\n.\r\nDATA\r\nb\r\n.\r\n",
    ["L:DATA", "D:a\r\n", "END", "L:DATA", "END", "L:DATA", "D:b\r\n", "END"],
  ],
  [
    "dot-unstuffing (RFC 5321 §4.5.2)",
    "DATA\r\n..\r\n...x\r\n.a\r\nb.\r\n.\r\n",
    ["L:DATA", "D:.\r\n..x\r\na\r\nb.\r\n", "END"],
  ],
  ["unstuffed dot line at data start", "DATA\r\n..\r\n.\r\n", ["L:DATA", "D:.\r\n", "END"]],
  ["dot after content in a line", "DATA\r\na.\r\n.\r\n", ["L:DATA", "D:a.\r\n", "END"]],
  ["data waits for the end", "DATA\r\nabc\r\n", ["L:DATA", "D:abc\r\n"]],
  ["data waits after the dot", "DATA\r\nabc\r\n.", ["L:DATA", "D:abc\r\n"]],
  ["data waits after dot CR", "DATA\r\nabc\r\n.\r", ["L:DATA", "D:abc\r\n"]],
  // SMTP smuggling: none of these may end the data.
  ["dot LF", "DATA\r\na\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", ["L:DATA", "DE:bare-lf"]],
  ["LF dot LF", "DATA\r\na\n.\nb\r\n.\r\n", ["L:DATA", "DE:bare-lf"]],
  ["CR dot CR", "DATA\r\na\r.\rb\r\n.\r\n", ["L:DATA", "DE:bare-cr"]],
  ["LF dot CRLF", "DATA\r\na\n.\r\nb\r\n.\r\n", ["L:DATA", "DE:bare-lf"]],
  ["dot CR x", "DATA\r\na\r\n.\rx\r\n.\r\n", ["L:DATA", "DE:bare-cr"]],
  ["bare LF first in data", "DATA\r\n\n.\r\n", ["L:DATA", "DE:bare-lf"]],
  ["bare CR in data", "DATA\r\nab\rc\r\n.\r\n", ["L:DATA", "DE:bare-cr"]],
  ["CR CR LF in data", "DATA\r\nab\r\r\n.\r\n", ["L:DATA", "DE:bare-cr"]],
  ["first data error named", "DATA\r\na\rb\nc\r\n", ["L:DATA", "DE:bare-cr"]],
  // Command mode: errors resynchronise so the session stays in step.
  ["bare LF", "NOOP\nQUIT\r\n", ["E:bare-lf", "L:QUIT"]],
  ["LF-only client", "EHLO a\nMAIL FROM:<a@b>\n", ["E:bare-lf", "E:bare-lf"]],
  ["lone LF", "\nNOOP\r\n", ["E:bare-lf", "L:NOOP"]],
  ["bare CR then CRLF", "NO\rOP\r\nQUIT\r\n", ["E:bare-cr", "L:QUIT"]],
  ["bare CR then bare LF", "NO\rOP\nQUIT\r\n", ["E:bare-cr", "L:QUIT"]],
  ["CR CR LF", "NOOP\r\r\nQUIT\r\n", ["E:bare-cr", "L:QUIT"]],
  ["UTF-8 decoded", "EHLO \xc3\xa9\r\n", ["L:EHLO é"]],
  ["invalid UTF-8 replaced", "EHLO \xff\r\n", ["L:EHLO \ufffd"]],
  ["NUL passed to the parser", "NO\0OP\r\n", ["L:NO\0OP"]],
];

Deno.test("SmtpInput: table, every split point", async (t) => {
  for (const [name, input, expect, max] of CASES) {
    await t.step(name, () => assert.deepEqual(allSplits(input, max), expect));
  }
});

Deno.test("SmtpInput: line length limit includes the CRLF (RFC 5321 §4.5.3.1.4)", () => {
  const ok = "x".repeat(14);
  assert.deepEqual(allSplits(`${ok}\r\nQUIT\r\n`, 16), [`L:${ok}`, "L:QUIT"]);
  assert.deepEqual(allSplits(`${ok}x\r\nQUIT\r\n`, 16), ["E:too-long", "L:QUIT"]);
  assert.deepEqual(allSplits(`${"y".repeat(40)}\r\nQUIT\r\n`, 16), ["E:too-long", "L:QUIT"]);
  // A bare-LF line may be 15 bytes of content; over that it is too long.
  assert.deepEqual(allSplits(`${"x".repeat(15)}\nQUIT\r\n`, 16), ["E:bare-lf", "L:QUIT"]);
  assert.deepEqual(allSplits(`${"x".repeat(16)}\nQUIT\r\n`, 16), ["E:too-long", "L:QUIT"]);
  // Bare CRs inside an overlong line do not add errors: one per line.
  assert.deepEqual(allSplits(`${"a\r".repeat(20)}\r\nNOOP\r\n`, 16), ["E:too-long", "L:NOOP"]);
  assert.deepEqual(allSplits(`${"a".repeat(20)}\r\r\nNOOP\r\n`, 16), ["E:too-long", "L:NOOP"]);
});

Deno.test("SmtpInput: an overlong line is skipped without being held", () => {
  const input = new SmtpInput({ maxLineLength: 512 });
  const chunk = new Uint8Array(65536).fill(0x41);
  for (let i = 0; i < 32; i++) {
    input.push(chunk);
    assert.equal(input.nextLine(), null);
    assert.ok(input.buffered <= 1, `holding ${input.buffered} bytes`);
  }
  input.push(enc.encode("\r\nQUIT\r\n"));
  assert.deepEqual(input.nextLine(), { kind: "error", error: "too-long" });
  assert.deepEqual(input.nextLine(), { kind: "line", line: "QUIT" });
  assert.equal(input.nextLine(), null);
  assert.equal(input.buffered, 0);
});

Deno.test("SmtpInput: a partial line is held only up to the limit", () => {
  const input = new SmtpInput({ maxLineLength: 100 });
  for (let i = 0; i < 50; i++) {
    input.push(enc.encode("abcdefghij"));
    assert.equal(input.nextLine(), null);
    assert.ok(input.buffered <= 102, `holding ${input.buffered} bytes`);
  }
});

Deno.test("SmtpInput: buffered counts unread bytes (talking before the greeting)", () => {
  const input = new SmtpInput({ maxLineLength: 512 });
  assert.equal(input.buffered, 0);
  input.push(enc.encode("EHLO x\r\n"));
  input.push(enc.encode("NOOP\r\n"));
  assert.equal(input.buffered, 14);
  assert.deepEqual(input.nextLine(), { kind: "line", line: "EHLO x" });
  assert.equal(input.buffered, 6);
  input.push(new Uint8Array(0));
  assert.deepEqual(input.nextLine(), { kind: "line", line: "NOOP" });
  assert.equal(input.buffered, 0);
  assert.equal(input.nextLine(), null);
});

Deno.test("SmtpInput: data comes out as large views, not copies or lines", () => {
  const body = "0123456789abcdefghij012345678901234567890123456789012345678901234567\r\n"
    .repeat(1000);
  const chunk = enc.encode(`DATA\r\n${body}.\r\nQUIT\r\n`);
  const input = new SmtpInput({ maxLineLength: 512 });
  input.push(chunk);
  assert.deepEqual(input.nextLine(), { kind: "line", line: "DATA" });
  const ev = input.nextData();
  assert.ok(ev?.kind === "data");
  assert.equal(ev.bytes.buffer, chunk.buffer, "a view into the pushed chunk");
  assert.equal(ev.bytes.length, body.length, "one event for the whole body");
  assert.deepEqual(input.nextData(), { kind: "end" });
  assert.deepEqual(input.nextLine(), { kind: "line", line: "QUIT" });
});

Deno.test("SmtpInput: data holds only a few bytes of lookahead", () => {
  const input = new SmtpInput({ maxLineLength: 512 });
  input.push(enc.encode("DATA\r\n"));
  assert.deepEqual(input.nextLine(), { kind: "line", line: "DATA" });
  const lines = "line\r\n".repeat(1000);
  // Each chunk ends where the reader cannot yet decide: CR, line-start dot, dot CR.
  const chunks = [`${lines}ab\r`, `\n${lines}.`, `.x\r\n${lines}.\r`, "\n"];
  let got = "";
  let end = false;
  for (const chunk of chunks) {
    input.push(enc.encode(chunk));
    for (let ev = input.nextData(); ev; ev = input.nextData()) {
      if (ev.kind === "data") got += dec.decode(ev.bytes);
      else end = ev.kind === "end";
    }
    assert.ok(input.buffered <= 3, `holding ${input.buffered} bytes`);
  }
  assert.equal(got, `${lines}ab\r\n${lines}.x\r\n${lines}`);
  assert.ok(end);
  assert.equal(input.buffered, 0);
});

Deno.test("SmtpInput: a data error is final", () => {
  const input = new SmtpInput({ maxLineLength: 512 });
  input.push(enc.encode("DATA\r\na\nb\r\n.\r\n"));
  assert.deepEqual(input.nextLine(), { kind: "line", line: "DATA" });
  assert.deepEqual(input.nextData(), { kind: "error", error: "bare-lf" });
  assert.deepEqual(input.nextData(), { kind: "error", error: "bare-lf" });
});

Deno.test("SmtpInput: rejects a silly maxLineLength", () => {
  assert.throws(() => new SmtpInput({ maxLineLength: 0 }), RangeError);
  assert.throws(() => new SmtpInput({ maxLineLength: 1.5 }), RangeError);
});
