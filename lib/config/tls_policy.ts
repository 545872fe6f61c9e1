/**
 * The transport-security keys of the [delivery] table: MTA-STS, DANE and
 * TLS-RPT switches. Read here (called by lib/config/routing.ts's reader) so
 * the delivery settings' shape changes in one field only.
 */
import { resolve } from "node:path";

/** [delivery] mta_sts, mta_sts_ca_file, dane, tls_rpt, tls_rpt_dir. */
export interface TlsPolicyConfig {
  /** RFC 8461 for MX delivery; it only ever tightens, so "on" by default. */
  mtaSts: "on" | "off";
  /** PEM CAs trusted for the policy fetch and MTA-STS MX checks; "" = the system's. */
  mtaStsCaFile: string;
  /** RFC 7672 for MX delivery; needs delivery.nameserver to be a validating resolver. */
  dane: "on" | "off";
  /** RFC 8460: "off", "write" daily JSON reports, or "send" them to the domain's rua. */
  tlsRpt: "off" | "write" | "send";
  /** Where reports are written; "" = <spool_dir>/tls-rpt. */
  tlsRptDir: string;
}

/** The keys this module reads. */
export const TLS_POLICY_KEYS = ["mta_sts", "mta_sts_ca_file", "dane", "tls_rpt", "tls_rpt_dir"];

type Fail = (key: string, expected: string, found: unknown) => never;

function oneOf<T extends string>(
  t: Record<string, unknown>,
  k: string,
  vals: T[],
  d: T,
  fail: Fail,
): T {
  const v = t[k] ?? d;
  if (!vals.includes(v as T)) fail(`delivery.${k}`, vals.map((x) => `"${x}"`).join(" or "), v);
  return v as T;
}

function path(t: Record<string, unknown>, k: string, cwd: string, fail: Fail): string {
  const v = t[k] ?? "";
  if (typeof v !== "string" || v.includes("\0")) fail(`delivery.${k}`, "a path string", v);
  return v === "" ? "" : resolve(cwd, v);
}

/** Reads the keys from the [delivery] table; a missing key takes its default. */
export function readTlsPolicyConfig(
  t: Record<string, unknown>,
  o: { cwd: string; fail: Fail },
): TlsPolicyConfig {
  const caFile = path(t, "mta_sts_ca_file", o.cwd, o.fail);
  if (caFile !== "") {
    let text = "";
    try {
      text = Deno.readTextFileSync(caFile);
    } catch (err) {
      o.fail(
        "delivery.mta_sts_ca_file",
        "a readable PEM file",
        `${caFile} (${(err as Error).message})`,
      );
    }
    if (!text.includes("-----BEGIN CERTIFICATE-----")) {
      o.fail("delivery.mta_sts_ca_file", "a PEM file with at least one CERTIFICATE", caFile);
    }
  }
  return {
    mtaSts: oneOf(t, "mta_sts", ["on", "off"], "on", o.fail),
    mtaStsCaFile: caFile,
    dane: oneOf(t, "dane", ["on", "off"], "on", o.fail),
    tlsRpt: oneOf(t, "tls_rpt", ["off", "write", "send"], "off", o.fail),
    tlsRptDir: path(t, "tls_rpt_dir", o.cwd, o.fail),
  };
}

/** The lines for `skiff check-config`, with a note when DANE cannot work. */
export function describeTlsPolicy(
  c: TlsPolicyConfig,
  o: { inline: (v: unknown) => string; nameserver: boolean },
): string[] {
  const kv = (k: string, v: unknown) => `${k} = ${o.inline(v)}`;
  const lines = [
    kv("mta_sts", c.mtaSts),
    kv("mta_sts_ca_file", c.mtaStsCaFile),
    kv("dane", c.dane),
  ];
  if (c.dane === "on" && !o.nameserver) {
    lines.push(
      "# DANE is off: it needs delivery.nameserver to name a DNSSEC-validating resolver",
      "# (the system resolver's AD bit cannot be read)",
    );
  }
  lines.push(kv("tls_rpt", c.tlsRpt), kv("tls_rpt_dir", c.tlsRptDir));
  return lines;
}
