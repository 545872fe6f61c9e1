/**
 * Peers for the outbound TLS policy tests: one test CA signing leaves for
 * any names (openssl), a loopback HTTPS server for MTA-STS policies
 * (Deno.serve with the CA's leaf), and a tiny DNS stub on UDP that answers
 * MX, A, TLSA and TXT with the AD bit set, as a DNSSEC-validating resolver
 * would (dnsmasq sets AD only with a full DNSSEC setup).
 */
import assert from "node:assert/strict";
import * as dgram from "node:dgram";
import { createHash, X509Certificate } from "node:crypto";
import { PEERS } from "./peers.ts";
import { run } from "./run_cmd.ts";
import {
  decodeMessage,
  type DnsRecord,
  encodeMessage,
  encodeName,
  encodeTlsa,
  type Tlsa,
  TYPE,
} from "../lib/tlspolicy/dns_wire.ts";

async function openssl(...args: string[]): Promise<void> {
  const r = await run([PEERS.openssl.bin, ...args]);
  assert.equal(r.code, 0, r.out);
}

/** Makes dir/ca.pem (+key). */
export async function makeCa(dir: string): Promise<void> {
  await openssl(
    ..."req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2".split(" "),
    ...["-keyout", `${dir}/ca.key`, "-out", `${dir}/ca.pem`, "-subj", "/CN=skiff tls policy CA"],
  );
}

/** A leaf for names signed by dir's CA: dir/<label>.pem and dir/<label>.key. */
export async function makeLeaf(dir: string, label: string, names: string[]): Promise<void> {
  await openssl(
    ..."req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes".split(" "),
    ...[
      "-keyout",
      `${dir}/${label}.key`,
      "-out",
      `${dir}/${label}.csr`,
      "-subj",
      `/CN=${names[0]}`,
    ],
  );
  await Deno.writeTextFile(
    `${dir}/${label}.cnf`,
    `subjectAltName=${names.map((n) => `DNS:${n}`).join(",")}\nbasicConstraints=CA:FALSE\n`,
  );
  await openssl(
    ...["x509", "-req", "-in", `${dir}/${label}.csr`, "-CA", `${dir}/ca.pem`],
    ...["-CAkey", `${dir}/ca.key`, "-CAcreateserial", "-out", `${dir}/${label}.pem`],
    ...["-days", "2", "-extfile", `${dir}/${label}.cnf`],
  );
}

/** TLSA 3 1 1 (DANE-EE, SPKI, SHA-256) of a PEM certificate. */
export function tlsaEeSpki(pem: string): Tlsa {
  const spki = new X509Certificate(pem).publicKey.export({ type: "spki", format: "der" });
  return {
    usage: 3,
    selector: 1,
    mtype: 1,
    data: new Uint8Array(createHash("sha256").update(spki).digest()),
  };
}

/** TLSA 2 0 1 (DANE-TA, full certificate, SHA-256) of a PEM CA certificate. */
export function tlsaTaCert(pem: string): Tlsa {
  const der = new Uint8Array(new X509Certificate(pem).raw);
  return {
    usage: 2,
    selector: 0,
    mtype: 1,
    data: new Uint8Array(createHash("sha256").update(der).digest()),
  };
}

/** An HTTPS server answering /.well-known/mta-sts.txt per Host header. */
export function policyServer(
  cert: string,
  key: string,
  policies: Record<string, string | (() => Response)>,
): { port: number; hits: string[]; stop(): Promise<void> } {
  const hits: string[] = [];
  let port = 0;
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert,
    key,
    onListen: (a) => port = a.port,
  }, (req) => {
    const host = (req.headers.get("host") ?? "").toLowerCase();
    hits.push(`${host}${new URL(req.url).pathname}`);
    const body = policies[host];
    if (body === undefined || new URL(req.url).pathname !== "/.well-known/mta-sts.txt") {
      return new Response("not found\n", { status: 404 });
    }
    if (typeof body === "function") return body();
    return new Response(body, { headers: { "content-type": "text/plain" } });
  });
  return {
    get port() {
      return port;
    },
    hits,
    stop: () => server.shutdown(),
  };
}

/** Zone data for the DNS stub: name → records (lower-case names, no trailing dot). */
export interface StubZone {
  a?: Record<string, string>;
  mx?: Record<string, string>;
  tlsa?: Record<string, Tlsa[]>;
  /** Names answered without the AD bit (insecure). */
  insecure?: string[];
}

/** The DNS stub on 127.0.0.1 (UDP); every answer has AD set unless the name is insecure. */
export async function dnsStub(zone: StubZone): Promise<{ port: number; stop(): Promise<void> }> {
  const sock = dgram.createSocket("udp4");
  sock.on("message", (data: Uint8Array, rinfo: { address: string; port: number }) => {
    let q;
    try {
      q = decodeMessage(new Uint8Array(data));
    } catch {
      return;
    }
    const question = q.question[0];
    if (!question) return;
    const { name, type } = question;
    const answers: DnsRecord[] = [];
    if (type === TYPE.A && zone.a?.[name]) {
      answers.push({
        name,
        type,
        ttl: 60,
        rdata: new Uint8Array(zone.a[name].split(".").map(Number)),
      });
    }
    if (type === TYPE.MX && zone.mx?.[name]) {
      answers.push({
        name,
        type,
        ttl: 60,
        rdata: new Uint8Array([0, 10, ...encodeName(zone.mx[name])]),
      });
    }
    for (const t of type === TYPE.TLSA ? zone.tlsa?.[name] ?? [] : []) {
      answers.push({ name, type, ttl: 60, rdata: encodeTlsa(t) });
    }
    const exists = [zone.a, zone.mx, zone.tlsa].some((z) => z && name in z);
    const reply = encodeMessage({
      id: q.id,
      qr: true,
      ad: !zone.insecure?.includes(name),
      rcode: exists ? 0 : 3,
      question: { name, type },
      answers,
    });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  return {
    port: sock.address().port,
    stop: () => new Promise<void>((r) => sock.close(() => r())),
  };
}
