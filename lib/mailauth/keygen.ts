/**
 * `skiff dkim keygen --domain D --selector S [--type rsa|ed25519] [--bits N]
 * [--out FILE]`: makes a DKIM signing key, writes the private key (PKCS#8
 * PEM, mode 0600, created new so an existing key is never overwritten,
 * owned by skiff's `user` when the config names one) and prints the DNS TXT
 * record to publish and the [[dkim]] block to add. RSA keys are 2048 bits
 * unless asked for more; Ed25519 keys are published as the raw 32-byte
 * public key (RFC 8463 §4.2), RSA keys as SubjectPublicKeyInfo (RFC 6376 §3.6.1).
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { resolve } from "node:path";
import { EX_CANTCREAT, EX_USAGE } from "../sys/exit_codes.ts";
import type { Config } from "../config/types.ts";
import { MIN_RSA_BITS } from "./keys.ts";

const USAGE =
  "Usage: skiff dkim keygen --domain DOMAIN --selector SELECTOR [--type rsa|ed25519] [--bits N] [--out FILE]";

/** A fresh key pair: the private key as PEM and the p= value for DNS. */
export function generateDkimKey(
  type: "rsa" | "ed25519",
  bits = MIN_RSA_BITS,
): { privatePem: string; publicKey: KeyObject } {
  const pair = type === "rsa"
    ? generateKeyPairSync("rsa", { modulusLength: bits })
    : generateKeyPairSync("ed25519");
  return {
    privatePem: pair.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    publicKey: pair.publicKey,
  };
}

/** The TXT record value (v=DKIM1; k=...; p=...) for a public key. */
export function dkimRecordValue(publicKey: KeyObject): string {
  const der = publicKey.export({ type: "spki", format: "der" });
  if (publicKey.asymmetricKeyType === "ed25519") {
    // RFC 8463 §4.2: the bare 32-byte key, not the SPKI structure (its last 32 bytes).
    return `v=DKIM1; k=ed25519; p=${der.subarray(der.length - 32).toString("base64")}`;
  }
  return `v=DKIM1; k=rsa; p=${der.toString("base64")}`;
}

/** The record in zone-file form, split into strings of at most 255 octets (RFC 1035 §3.3.14). */
export function zoneRecord(domain: string, selector: string, value: string): string {
  const parts = value.match(/.{1,250}/g) ?? [];
  const strings = parts.map((p) => `"${p}"`).join("\n\t");
  return `${selector}._domainkey.${domain}. IN TXT (\n\t${strings} )`;
}

/** Parses `--name value` options; throws on anything unknown. */
function parseArgs(args: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const known = ["--domain", "--selector", "--type", "--bits", "--out"];
  for (let i = 0; i < args.length; i++) {
    const [name, inlineValue] = args[i].split(/=(.*)/s, 2);
    if (!known.includes(name)) throw new Error(`Unknown option ${JSON.stringify(args[i])}`);
    const value = inlineValue ?? args[++i];
    if (value === undefined) throw new Error(`Option ${name} needs a value`);
    out[name.slice(2)] = value;
  }
  return out;
}

/** Writes the key file: created new with mode 0600, then given to skiff's user if one is configured. */
async function writeKey(path: string, pem: string, cfg: Config): Promise<void> {
  await Deno.writeTextFile(path, pem, { createNew: true, mode: 0o600 });
  await Deno.chmod(path, 0o600); // the umask may have narrowed it; never widened
  // `user` is the account skiff runs as (when configured): the manager reads the key as it.
  if (cfg.user) await Deno.chown(path, cfg.user.uid, cfg.user.gid);
}

/** `skiff dkim ...`; returns the exit code. */
export async function dkimCommand(cfg: Config, args: string[]): Promise<number> {
  if (args[0] !== "keygen") {
    console.error(`skiff: ${USAGE}`);
    return EX_USAGE;
  }
  let o: Record<string, string>;
  try {
    o = parseArgs(args.slice(1));
    if (!o.domain || !/^[A-Za-z0-9.-]+\.[A-Za-z0-9-]+$/.test(o.domain)) {
      throw new Error("Option --domain needs a domain name such as example.org");
    }
    if (!o.selector || !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(o.selector)) {
      throw new Error(
        "Option --selector needs a selector such as s2026 (letters, digits, - and .)",
      );
    }
    o.type ??= "rsa";
    if (o.type !== "rsa" && o.type !== "ed25519") {
      throw new Error(`Option --type must be rsa or ed25519, not ${JSON.stringify(o.type)}`);
    }
    const bits = Number(o.bits ?? MIN_RSA_BITS);
    if (!Number.isInteger(bits) || bits < MIN_RSA_BITS || bits > 8192) {
      throw new Error(`Option --bits must be an integer from ${MIN_RSA_BITS} to 8192`);
    }
    o.bits = String(bits);
  } catch (err) {
    console.error(`skiff: ${(err as Error).message}\n${USAGE}`);
    return EX_USAGE;
  }
  const domain = o.domain.toLowerCase();
  const out = resolve(o.out ?? `${o.selector}.${domain}.${o.type}.pem`);
  const { privatePem, publicKey } = generateDkimKey(o.type as "rsa" | "ed25519", Number(o.bits));
  try {
    await writeKey(out, privatePem, cfg);
  } catch (err) {
    const why = err instanceof Deno.errors.AlreadyExists
      ? "it exists (remove it first or choose another --out)"
      : (err as Error).message;
    console.error(`skiff: Cannot write the key to ${out}: ${why}`);
    return EX_CANTCREAT;
  }
  const algorithm = o.type === "rsa" ? "rsa-sha256" : "ed25519-sha256";
  console.log(`; private key written to ${out} (mode 0600)
; publish this record in the DNS zone of ${domain}:
${zoneRecord(domain, o.selector, dkimRecordValue(publicKey))}

; and add to skiff.toml:
[[dkim]]
domain = "${domain}"
selector = "${o.selector}"
key = "${out}"
algorithm = "${algorithm}"`);
  return 0;
}
