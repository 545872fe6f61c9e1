/**
 * A small DNS message codec (RFC 1035 §4) and one bounded UDP query, for
 * what Deno.resolveDns cannot give: the AD bit (RFC 4035 §3.2.3, "the
 * validating resolver says this answer is DNSSEC-secure") that DANE needs
 * (RFC 7672 §2.1), and TLSA records (RFC 6698). Written by hand because no
 * maintained npm resolver exposes the header flags through a resolver we
 * can point at delivery.nameserver with a deadline; the codec is strict:
 * every length is checked against the message, compression pointers may
 * only point backwards and are followed a bounded number of times.
 */
import * as dgram from "node:dgram";
import { isIPv6 } from "node:net";

/** Record types used here. */
export const TYPE = { A: 1, MX: 15, TXT: 16, AAAA: 28, TLSA: 52, OPT: 41 } as const;

/** One resource record; rdata raw (names inside it are not expanded). */
export interface DnsRecord {
  name: string;
  type: number;
  ttl: number;
  rdata: Uint8Array;
}

/** A parsed message. */
export interface DnsMessage {
  id: number;
  /** Response (QR), authentic data (AD), truncated (TC), recursion desired. */
  flags: { qr: boolean; ad: boolean; tc: boolean; rd: boolean; cd: boolean };
  rcode: number;
  question: { name: string; type: number }[];
  answers: DnsRecord[];
}

/** Malformed DNS data. */
export class DnsWireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DnsWireError";
  }
}

/** A name in wire form, uncompressed (also MX rdata in tests). */
export function encodeName(name: string): Uint8Array {
  const labels = name.replace(/\.$/, "").split(".").filter((l) => l !== "");
  const out: number[] = [];
  for (const l of labels) {
    const b = new TextEncoder().encode(l);
    if (b.length > 63) throw new DnsWireError(`DNS label too long in ${name}`);
    out.push(b.length, ...b);
  }
  out.push(0);
  if (out.length > 255) throw new DnsWireError(`DNS name too long: ${name}`);
  return new Uint8Array(out);
}

function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff];
}

/**
 * Encodes a message: a query when `answers` is empty and qr is false. The
 * query carries an EDNS0 OPT record (RFC 6891) with the DO bit (RFC 3225)
 * and the AD bit set (RFC 6840 §5.7: asks for the AD bit in the answer).
 */
export function encodeMessage(m: {
  id: number;
  qr?: boolean;
  ad?: boolean;
  rcode?: number;
  question: { name: string; type: number };
  answers?: DnsRecord[];
}): Uint8Array {
  const flags = (m.qr ? 0x8000 : 0) | 0x0100 /* RD */ | (m.qr ? 0x0080 : 0) /* RA */ |
    (m.ad ? 0x0020 : 0) | (m.rcode ?? 0);
  const answers = m.answers ?? [];
  const out: number[] = [...u16(m.id), ...u16(flags), ...u16(1), ...u16(answers.length)];
  out.push(...u16(0), ...u16(1)); // NSCOUNT, ARCOUNT (the OPT record)
  out.push(...encodeName(m.question.name), ...u16(m.question.type), ...u16(1));
  for (const r of answers) {
    out.push(...encodeName(r.name), ...u16(r.type), ...u16(1));
    out.push((r.ttl >>> 24) & 0xff, (r.ttl >>> 16) & 0xff, (r.ttl >>> 8) & 0xff, r.ttl & 0xff);
    out.push(...u16(r.rdata.length), ...r.rdata);
  }
  // OPT: root name, type 41, UDP payload 1232, extended rcode/version 0, DO bit.
  out.push(0, ...u16(TYPE.OPT), ...u16(1232), 0, 0, 0x80, 0, ...u16(0));
  return new Uint8Array(out);
}

/** Reads a (possibly compressed) name at off; returns it and the offset after it. */
function readName(buf: Uint8Array, off: number): [string, number] {
  const labels: string[] = [];
  let pos = off, end = -1, jumps = 0;
  for (;;) {
    if (pos >= buf.length) throw new DnsWireError("DNS name runs past the message");
    const len = buf[pos];
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw new DnsWireError("DNS pointer runs past the message");
      const target = ((len & 0x3f) << 8) | buf[pos + 1];
      if (target >= pos || ++jumps > 20) throw new DnsWireError("Bad DNS compression pointer");
      if (end < 0) end = pos + 2;
      pos = target;
      continue;
    }
    if (len & 0xc0) throw new DnsWireError("Bad DNS label type");
    if (len === 0) break;
    if (pos + 1 + len > buf.length) throw new DnsWireError("DNS label runs past the message");
    labels.push(new TextDecoder().decode(buf.subarray(pos + 1, pos + 1 + len)));
    pos += 1 + len;
    if (labels.length > 127) throw new DnsWireError("DNS name has too many labels");
  }
  return [labels.join(".").toLowerCase(), end >= 0 ? end : pos + 1];
}

/** Decodes a message strictly; throws DnsWireError. */
export function decodeMessage(buf: Uint8Array): DnsMessage {
  if (buf.length < 12) throw new DnsWireError("DNS message shorter than its header");
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  const [qd, an] = [v.getUint16(4), v.getUint16(6)];
  let off = 12;
  const question: DnsMessage["question"] = [];
  for (let i = 0; i < qd; i++) {
    const [name, next] = readName(buf, off);
    if (next + 4 > buf.length) throw new DnsWireError("DNS question runs past the message");
    question.push({ name, type: v.getUint16(next) });
    off = next + 4;
  }
  const answers: DnsRecord[] = [];
  for (let i = 0; i < an; i++) {
    const [name, next] = readName(buf, off);
    if (next + 10 > buf.length) throw new DnsWireError("DNS record runs past the message");
    const len = v.getUint16(next + 8);
    if (next + 10 + len > buf.length) throw new DnsWireError("DNS rdata runs past the message");
    answers.push({
      name,
      type: v.getUint16(next),
      ttl: v.getUint32(next + 4),
      rdata: buf.slice(next + 10, next + 10 + len),
    });
    off = next + 10 + len;
  }
  return {
    id: v.getUint16(0),
    flags: {
      qr: (flags & 0x8000) !== 0,
      tc: (flags & 0x0200) !== 0,
      rd: (flags & 0x0100) !== 0,
      ad: (flags & 0x0020) !== 0,
      cd: (flags & 0x0010) !== 0,
    },
    rcode: flags & 0x000f,
    question,
    answers,
  };
}

/** The answer to one query: whether it is DNSSEC-secure, and the records of the asked type. */
export interface QueryAnswer {
  /** AD bit set by the (validating) resolver. */
  secure: boolean;
  /** 0 NOERROR, 3 NXDOMAIN; anything else was thrown. */
  rcode: number;
  records: DnsRecord[];
}

/**
 * One UDP query to server, bounded by timeoutMs (retransmitted once a
 * second while the time lasts). A truncated answer, a SERVFAIL (the
 * validating resolver's "bogus"), a mismatched id or question is an error.
 */
export async function queryUdp(
  name: string,
  type: number,
  server: { host: string; port: number },
  timeoutMs: number,
): Promise<QueryAnswer> {
  const id = crypto.getRandomValues(new Uint16Array(1))[0];
  const query = encodeMessage({ id, ad: true, question: { name, type } });
  const sock = dgram.createSocket(isIPv6(server.host) ? "udp6" : "udp4");
  try {
    const answer = await new Promise<DnsMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        clearInterval(resend);
        reject(new DnsWireError(`DNS query for ${name} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const send = () => sock.send(query, server.port, server.host);
      const resend = setInterval(send, 1000);
      sock.on("error", (err) => {
        clearTimeout(timer);
        clearInterval(resend);
        reject(err);
      });
      sock.on("message", (data: Uint8Array, rinfo: { address: string; port: number }) => {
        if (rinfo.port !== server.port) return; // not our server: ignore
        let m: DnsMessage;
        try {
          m = decodeMessage(new Uint8Array(data));
        } catch {
          return; // garbage is dropped, as a spoofed answer would be
        }
        const q = m.question[0];
        if (m.id !== id || !m.flags.qr || q?.name !== name.toLowerCase().replace(/\.$/, "")) {
          return;
        }
        clearTimeout(timer);
        clearInterval(resend);
        resolve(m);
      });
      send();
    });
    if (answer.flags.tc) throw new DnsWireError(`DNS answer for ${name} was truncated`);
    if (answer.rcode !== 0 && answer.rcode !== 3) {
      throw new DnsWireError(`DNS query for ${name} failed with rcode ${answer.rcode}`);
    }
    return {
      secure: answer.flags.ad,
      rcode: answer.rcode,
      records: answer.answers.filter((r) => r.type === type),
    };
  } finally {
    sock.close();
  }
}

/** A TLSA record (RFC 6698 §2.1). */
export interface Tlsa {
  usage: number;
  selector: number;
  mtype: number;
  data: Uint8Array;
}

/** Decodes TLSA rdata; null when shorter than its fixed part. */
export function parseTlsa(rdata: Uint8Array): Tlsa | null {
  if (rdata.length < 4) return null;
  return { usage: rdata[0], selector: rdata[1], mtype: rdata[2], data: rdata.slice(3) };
}

/** Encodes TLSA rdata (tests' DNS stub). */
export function encodeTlsa(t: Tlsa): Uint8Array {
  return new Uint8Array([t.usage, t.selector, t.mtype, ...t.data]);
}
