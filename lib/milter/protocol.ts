/**
 * The sendmail milter protocol, version 6, as the MTA side speaks it
 * (sendmail's libmilter/mfdef.h, the protocol Postfix's milter8.c, rspamd,
 * opendkim and clamav-milter implement): every packet is a 4-byte
 * big-endian length, one command byte, then the data; strings are
 * NUL-terminated. This module only encodes commands and decodes replies,
 * as pure functions, so it is table- and fuzz-testable. Hand-written
 * because the npm milter packages implement the filter side, not the MTA's.
 */

/** Commands the MTA sends (SMFIC_*). */
export const Cmd = {
  abort: "A",
  body: "B",
  connect: "C",
  macro: "D",
  endOfBody: "E",
  helo: "H",
  header: "L",
  mail: "M",
  endOfHeaders: "N",
  optneg: "O",
  quit: "Q",
  rcpt: "R",
  data: "T",
} as const;

/** Protocol steps a milter may ask to skip, or to get no reply for (SMFIP_*). */
export const Proto = {
  noConnect: 0x1,
  noHelo: 0x2,
  noMail: 0x4,
  noRcpt: 0x8,
  noBody: 0x10,
  noHeaders: 0x20,
  noEndOfHeaders: 0x40,
  noReplyHeader: 0x80,
  noUnknown: 0x100,
  noData: 0x200,
  skip: 0x400,
  rcptRejected: 0x800,
  noReplyConnect: 0x1000,
  noReplyHelo: 0x2000,
  noReplyMail: 0x4000,
  noReplyRcpt: 0x8000,
  noReplyData: 0x10000,
  noReplyUnknown: 0x20000,
  noReplyEndOfHeaders: 0x40000,
  noReplyBody: 0x80000,
  headerLeadingSpace: 0x100000,
} as const;

/** What skiff lets a milter do at end of message (SMFIF_*): headers and the body. */
export const Actions = {
  addHeaders: 0x1,
  changeBody: 0x2,
  changeHeaders: 0x10,
  quarantine: 0x20,
} as const;

/** The protocol steps skiff can send and the no-reply options it honours. */
export const SUPPORTED_PROTO = 0x1fffff & ~Proto.rcptRejected;

/** Largest packet skiff accepts from a milter (libmilter's data limit is 64 KiB; replies are small). */
export const MAX_PACKET = 1024 * 1024;

/** Largest body chunk in one SMFIC_BODY (MILTER_CHUNK_SIZE). */
export const CHUNK_SIZE = 65535;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

/** One packet: length, command byte, data. */
export function packet(cmd: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(0, 1 + data.length);
  out[4] = cmd.charCodeAt(0);
  out.set(data, 5);
  return out;
}

/** NUL-terminated strings, concatenated. */
export function strings(...parts: string[]): Uint8Array {
  const encoded = parts.map((p) => encoder.encode(p));
  const out = new Uint8Array(encoded.reduce((n, e) => n + e.length + 1, 0));
  let at = 0;
  for (const e of encoded) {
    out.set(e, at);
    at += e.length + 1;
  }
  return out;
}

/** SMFIC_OPTNEG: version 6, the actions skiff allows, the protocol steps it offers. */
export function optneg(actions: number, proto: number): Uint8Array {
  const data = new Uint8Array(12);
  const v = new DataView(data.buffer);
  v.setUint32(0, 6);
  v.setUint32(4, actions);
  v.setUint32(8, proto);
  return packet(Cmd.optneg, data);
}

/** SMFIC_CONNECT: the client's name, family and address ('4', '6', or 'L' for a unix socket). */
export function connect(host: string, address: string, port: number): Uint8Array {
  const family = address.startsWith("unix:") ? "L" : address.includes(":") ? "6" : "4";
  const name = encoder.encode(host);
  const addr = encoder.encode(family === "L" ? address.slice(5) : address);
  const data = new Uint8Array(name.length + 1 + 1 + 2 + addr.length + 1);
  data.set(name, 0);
  let at = name.length + 1;
  data[at++] = family.charCodeAt(0);
  new DataView(data.buffer).setUint16(at, family === "L" ? 0 : port);
  at += 2;
  data.set(addr, at);
  return packet(Cmd.connect, data);
}

/** SMFIC_MACRO for the command `forCmd`: name/value pairs such as {i} (queue id), j (our name). */
export function macros(forCmd: string, pairs: Record<string, string>): Uint8Array {
  const flat = Object.entries(pairs).flat();
  const body = strings(...flat);
  const data = new Uint8Array(1 + body.length);
  data[0] = forCmd.charCodeAt(0);
  data.set(body, 1);
  return packet(Cmd.macro, data);
}

/** A milter's reply, decoded. */
export type MilterReply =
  | { kind: "continue" }
  | { kind: "accept" }
  | { kind: "reject" }
  | { kind: "tempfail" }
  | { kind: "discard" }
  | { kind: "skip" }
  | { kind: "progress" }
  | { kind: "replycode"; code: number; text: string }
  | { kind: "optneg"; version: number; actions: number; proto: number }
  | { kind: "addHeader"; name: string; value: string }
  | { kind: "insertHeader"; index: number; name: string; value: string }
  | { kind: "changeHeader"; index: number; name: string; value: string }
  | { kind: "replaceBody"; chunk: Uint8Array }
  | { kind: "quarantine"; reason: string }
  | { kind: "other"; cmd: string };

/** A reply a milter sent that does not follow the protocol. */
export class MilterProtocolError extends Error {}

function cstrings(data: Uint8Array, count: number): string[] {
  const out: string[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    const end = data.indexOf(0, at);
    if (end < 0) throw new MilterProtocolError("Milter reply has an unterminated string");
    out.push(decoder.decode(data.subarray(at, end)));
    at = end + 1;
  }
  return out;
}

/** Decodes one packet's command byte and data into a reply. */
export function decodeReply(cmd: string, data: Uint8Array): MilterReply {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const need = (n: number) => {
    if (data.length < n) throw new MilterProtocolError(`Milter reply ${cmd} is too short`);
  };
  switch (cmd) {
    case "c":
      return { kind: "continue" };
    case "a":
      return { kind: "accept" };
    case "r":
      return { kind: "reject" };
    case "t":
      return { kind: "tempfail" };
    case "d":
      return { kind: "discard" };
    case "s":
      return { kind: "skip" };
    case "p":
      return { kind: "progress" };
    case "y": {
      const [text] = cstrings(data, 1);
      const m = /^([45]\d\d)[ -]/.exec(text);
      if (!m) throw new MilterProtocolError("Milter reply code is not a 4xx or 5xx reply");
      return { kind: "replycode", code: Number(m[1]), text };
    }
    case "O":
      need(12);
      return {
        kind: "optneg",
        version: view.getUint32(0),
        actions: view.getUint32(4),
        proto: view.getUint32(8),
      };
    case "h": {
      const [name, value] = cstrings(data, 2);
      return { kind: "addHeader", name, value };
    }
    case "i":
    case "m": {
      need(4);
      const [name, value] = cstrings(data.subarray(4), 2);
      const index = view.getUint32(0);
      return cmd === "i"
        ? { kind: "insertHeader", index, name, value }
        : { kind: "changeHeader", index, name, value };
    }
    case "b":
      return { kind: "replaceBody", chunk: data.slice() };
    case "q": {
      const [reason] = cstrings(data, 1);
      return { kind: "quarantine", reason };
    }
    default:
      return { kind: "other", cmd };
  }
}

/** Splits a byte stream into packets; bounded by MAX_PACKET. */
export class PacketReader {
  #buf = new Uint8Array(0);

  /** Adds bytes; returns the complete packets now available. */
  push(bytes: Uint8Array): { cmd: string; data: Uint8Array }[] {
    const merged = new Uint8Array(this.#buf.length + bytes.length);
    merged.set(this.#buf);
    merged.set(bytes, this.#buf.length);
    const out: { cmd: string; data: Uint8Array }[] = [];
    let at = 0;
    while (merged.length - at >= 4) {
      const len = new DataView(merged.buffer, at, 4).getUint32(0);
      if (len < 1 || len > MAX_PACKET) {
        throw new MilterProtocolError(`Milter packet length ${len} is out of bounds`);
      }
      if (merged.length - at < 4 + len) break;
      out.push({
        cmd: String.fromCharCode(merged[at + 4]),
        data: merged.slice(at + 5, at + 4 + len),
      });
      at += 4 + len;
    }
    this.#buf = merged.slice(at);
    return out;
  }
}
