/**
 * Helpers for the mail authentication tests: DKIM keys made by `skiff dkim
 * keygen` (so its printed record is what the peers check against), TXT
 * records as dnsmasq arguments, and running a peer (dkimverify,
 * opendkim-testmsg, pyspf) whose system resolver is a private dnsmasq
 * (tests/fixtures/dns_namespace.py, under `unshare --net --mount`).
 */
import { runSkiff } from "./harness.ts";
import { runCommand } from "./run_cmd.ts";
import type { Peer } from "./peers.ts";

const NS_SCRIPT = new URL("./fixtures/dns_namespace.py", import.meta.url).pathname;

/** The peers these tests use. */
export const AUTH_PEERS = {
  dkimverify: { bin: "/usr/bin/dkimverify", pkg: "python3-dkim" },
  dkimsign: { bin: "/usr/bin/dkimsign", pkg: "python3-dkim" },
  arcsign: { bin: "/usr/bin/arcsign", pkg: "python3-dkim" },
  opendkim: { bin: "/usr/sbin/opendkim-testmsg", pkg: "opendkim-tools" },
  pyspf: { bin: "/usr/lib/python3/dist-packages/spf.py", pkg: "python3-spf", data: true },
  unshare: { bin: "/usr/bin/unshare", pkg: "util-linux" },
  dnsmasq: { bin: "/usr/sbin/dnsmasq", pkg: "dnsmasq-base" },
} as const satisfies Record<string, Peer>;

/** A dnsmasq --txt-record argument; long values split into strings of 250 octets. */
export function txt(name: string, value: string): string {
  if (value.includes(",")) {
    throw new Error(`dnsmasq cannot serve a TXT value with a comma: ${value}`);
  }
  return `--txt-record=${name},${(value.match(/.{1,250}/g) ?? [""]).join(",")}`;
}

/** A key made by `skiff dkim keygen`, and the TXT value it printed. */
export interface TestKey {
  path: string;
  domain: string;
  selector: string;
  record: string;
  algorithm: "rsa-sha256" | "ed25519-sha256";
  /** The printed keygen output. */
  output: string;
}

/** Runs `skiff dkim keygen` into `dir`; parses the record out of its zone-file output. */
export async function keygen(
  dir: string,
  o: { domain: string; selector: string; type: "rsa" | "ed25519" },
): Promise<TestKey> {
  const path = `${dir}/${o.selector}.${o.domain}.pem`;
  const r = await runSkiff([
    "dkim",
    "keygen",
    "--domain",
    o.domain,
    "--selector",
    o.selector,
    "--type",
    o.type,
    "--out",
    path,
  ]);
  if (r.code !== 0) throw new Error(`skiff dkim keygen failed (${r.code}): ${r.stderr}`);
  const zone = /IN TXT \(([^)]*)\)/.exec(r.stdout)?.[1] ?? "";
  const strings = [...zone.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
  return {
    path,
    domain: o.domain,
    selector: o.selector,
    record: strings.join(""),
    algorithm: o.type === "rsa" ? "rsa-sha256" : "ed25519-sha256",
    output: r.stdout,
  };
}

/** The [[dkim]] TOML for keys. */
export function dkimToml(keys: TestKey[]): string {
  return keys.map((k) =>
    `[[dkim]]\ndomain = "${k.domain}"\nselector = "${k.selector}"\nkey = "${k.path}"\nalgorithm = "${k.algorithm}"\n`
  ).join("");
}

/** The dnsmasq argument publishing a key. */
export function keyRecord(k: TestKey): string {
  return txt(`${k.selector}._domainkey.${k.domain}`, k.record);
}

/** True where network namespaces can be made (root). */
export function canUnshare(): boolean {
  return Deno.uid() === 0;
}

/** Runs `cmd` with stdin in a namespace whose resolver is a dnsmasq serving `records`. */
export async function inDnsNamespace(
  records: string[],
  cmd: string[],
  stdin = "",
): Promise<{ code: number; out: string }> {
  const r = await runCommand([
    "/usr/bin/unshare",
    "--net",
    "--mount",
    "/usr/bin/python3",
    NS_SCRIPT,
    JSON.stringify(records),
    ...cmd,
  ], { stdin });
  return { code: r.code, out: (r.stdout + r.stderr).trim() };
}

/** The header section of a stored message (up to the empty line). */
export function headerOf(message: string): string {
  const end = message.indexOf("\r\n\r\n");
  return end < 0 ? message : message.slice(0, end + 2);
}
