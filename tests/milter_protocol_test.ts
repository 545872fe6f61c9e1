/**
 * The milter wire format and the message changes milters ask for, as
 * tables: packets encode as libmilter expects, replies decode (and broken
 * ones are refused, not guessed at), header and body changes land where
 * sendmail puts them, and the packet reader never buffers past its bound.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  connect,
  decodeReply,
  MAX_PACKET,
  MilterProtocolError,
  optneg,
  packet,
  PacketReader,
  strings,
} from "../lib/milter/protocol.ts";
import { applyChanges, splitMessage } from "../lib/milter/apply.ts";
import { parseMilterAddress } from "../lib/config/milter_address.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("milter packets: length, command byte, NUL-terminated strings", () => {
  assert.deepEqual([...packet("Q")], [0, 0, 0, 1, 0x51]);
  assert.deepEqual([...packet("H", strings("client.test"))].slice(0, 5), [0, 0, 0, 13, 0x48]);
  const o = optneg(0x33, 0x1fffff);
  assert.deepEqual([...o.subarray(0, 9)], [0, 0, 0, 13, 0x4f, 0, 0, 0, 6]);
  // SMFIC_CONNECT: hostname NUL, family, port (network order), address NUL.
  const c = connect("host.test", "192.0.2.1", 4242);
  assert.equal(dec(c.subarray(5, 14)), "host.test");
  assert.equal(String.fromCharCode(c[15]), "4");
  assert.equal((c[16] << 8) | c[17], 4242);
  assert.equal(dec(c.subarray(18, c.length - 1)), "192.0.2.1");
  assert.equal(String.fromCharCode(connect("h", "2001:db8::1", 25)[7]), "6");
  assert.equal(String.fromCharCode(connect("h", "unix:/run/x.sock", 0)[7]), "L");
});

Deno.test("milter replies decode; malformed ones are protocol errors", () => {
  assert.deepEqual(decodeReply("c", new Uint8Array(0)), { kind: "continue" });
  assert.deepEqual(decodeReply("y", enc("550 5.7.1 Gtube pattern\0")), {
    kind: "replycode",
    code: 550,
    text: "550 5.7.1 Gtube pattern",
  });
  assert.deepEqual(decodeReply("h", enc("X-Spam\0Yes\0")), {
    kind: "addHeader",
    name: "X-Spam",
    value: "Yes",
  });
  const chg = new Uint8Array([0, 0, 0, 2, ...enc("Subject\0new\0")]);
  assert.deepEqual(decodeReply("m", chg), {
    kind: "changeHeader",
    index: 2,
    name: "Subject",
    value: "new",
  });
  assert.throws(() => decodeReply("y", enc("250 ok\0")), MilterProtocolError);
  assert.throws(() => decodeReply("h", enc("X-Spam\0Yes")), MilterProtocolError);
  assert.throws(() => decodeReply("O", new Uint8Array(4)), MilterProtocolError);
  assert.throws(() => decodeReply("i", new Uint8Array(2)), MilterProtocolError);
});

Deno.test("the packet reader reassembles split packets and refuses oversized lengths", () => {
  const r = new PacketReader();
  const both = new Uint8Array([...packet("c"), ...packet("h", strings("A", "b"))]);
  assert.deepEqual(r.push(both.subarray(0, 3)), []);
  const got = r.push(both.subarray(3, 9)).concat(r.push(both.subarray(9)));
  assert.deepEqual(got.map((p) => p.cmd), ["c", "h"]);
  const big = new Uint8Array(5);
  new DataView(big.buffer).setUint32(0, MAX_PACKET + 1);
  assert.throws(() => new PacketReader().push(big), MilterProtocolError);
  assert.throws(() => new PacketReader().push(new Uint8Array([0, 0, 0, 0])), MilterProtocolError);
});

Deno.test("fuzz: the packet reader and reply decoder only ever throw protocol errors", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
      const r = new PacketReader();
      try {
        for (const c of chunks) for (const p of r.push(c)) decodeReply(p.cmd, p.data);
      } catch (err) {
        if (!(err instanceof MilterProtocolError)) throw err;
      }
    }),
    { numRuns: Number(Deno.env.get("FUZZ_RUNS") ?? 500) },
  );
});

const MESSAGE = enc(
  "Received: from x\r\n\tby y\r\nSubject: old\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody line\r\n",
);

Deno.test("milter changes: add, insert, change, delete headers and replace the body", () => {
  const out = applyChanges(MESSAGE, [
    { kind: "addHeader", name: "X-Spam", value: "Yes" },
    { kind: "insertHeader", index: 0, name: "X-First", value: "top" },
    { kind: "changeHeader", index: 2, name: "x-a", value: "two" },
    { kind: "changeHeader", index: 1, name: "Subject", value: "" },
    { kind: "replaceBody", chunk: enc("new\nbody\n") },
  ])!;
  assert.equal(
    dec(out),
    "X-First: top\r\nReceived: from x\r\n\tby y\r\nX-A: 1\r\nX-A: two\r\nX-Spam: Yes\r\n\r\n" +
      "new\r\nbody\r\n",
  );
  assert.equal(applyChanges(MESSAGE, []), null);
  assert.equal(applyChanges(MESSAGE, [{ kind: "quarantine", reason: "x" }]), null);
  const { headers, body } = splitMessage(MESSAGE);
  assert.deepEqual(headers.map((h) => h.name), ["Received", "Subject", "X-A", "X-A"]);
  assert.equal(dec(body), "body line\r\n");
});

Deno.test("milter addresses: inet:host:port, [v6]:port, unix:/path; anything else is refused", () => {
  assert.deepEqual(parseMilterAddress("inet:127.0.0.1:11332"), { host: "127.0.0.1", port: 11332 });
  assert.deepEqual(parseMilterAddress("[::1]:8891"), { host: "::1", port: 8891 });
  assert.deepEqual(parseMilterAddress("unix:/run/rspamd/milter.sock"), {
    path: "/run/rspamd/milter.sock",
  });
  for (const bad of ["", "inet:host", "unix:relative", "host:0", "host:70000", "a b:25"]) {
    assert.throws(() => parseMilterAddress(bad), /Milter/, bad);
  }
});
