/**
 * DKIM private keys: read from the `[[dkim]]` key files on first use and
 * kept until the next reload (SIGHUP or `skiff reload` calls forgetDkimKeys),
 * so a rotated key file is picked up without a restart and a message costs
 * no file read. Keys are read lazily, not at config load, because every
 * skiff command (the sendmail shim too, run by any user) loads the config
 * and only the running manager may read the keys. A key that is missing,
 * unreadable, of the wrong type or an RSA key under 2048 bits (RFC 8301 §3.2
 * asks at least 1024; 2048 is today's floor) is an error naming its file.
 */
import { createPrivateKey, type KeyObject } from "node:crypto";
import type { DkimKeyConfig } from "../config/mailauth.ts";

/** The smallest RSA signing key skiff uses. */
export const MIN_RSA_BITS = 2048;

/**
 * A loaded key. RSA keys are also imported into WebCrypto: Deno's RSA
 * signing costs ~10 ms of CPU (about 30 times OpenSSL's, measured with
 * scripts/bench_dkim.ts), and crypto.subtle.sign does it off the event loop
 * where node:crypto's sign() would stall every session meanwhile.
 */
export interface DkimKey {
  key: KeyObject;
  subtle?: CryptoKey;
}

const cache = new Map<string, Promise<DkimKey>>();

/** Forgets every cached key: the next signature reads the files again. */
export function forgetDkimKeys(): void {
  cache.clear();
}

/** Parses and checks a PEM key for `k`; throws an Error naming the file. */
export function parseDkimKey(pem: string, k: DkimKeyConfig): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new Error(`DKIM key ${k.key} is not a PEM private key: ${(e as Error).message}`);
  }
  const want = k.algorithm === "ed25519-sha256" ? "ed25519" : "rsa";
  if (key.asymmetricKeyType !== want) {
    throw new Error(
      `DKIM key ${k.key} is an ${key.asymmetricKeyType} key; algorithm ${k.algorithm} needs ${want}`,
    );
  }
  const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
  if (want === "rsa" && bits < MIN_RSA_BITS) {
    throw new Error(`DKIM key ${k.key} has ${bits} bits; at least ${MIN_RSA_BITS} are needed`);
  }
  return key;
}

async function readKey(k: DkimKeyConfig): Promise<DkimKey> {
  let pem: string;
  try {
    pem = await Deno.readTextFile(k.key);
  } catch (e) {
    throw new Error(`DKIM key ${k.key} cannot be read: ${(e as Error).message}`);
  }
  const key = parseDkimKey(pem, k);
  if (key.asymmetricKeyType !== "rsa") return { key };
  const der = key.export({ type: "pkcs8", format: "der" });
  const subtle = await crypto.subtle.importKey(
    "pkcs8",
    new Uint8Array(der),
    { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return { key, subtle };
}

/** The key of `k`, from the cache or its file; a failed read is not cached. */
export function dkimKey(k: DkimKeyConfig): Promise<DkimKey> {
  const id = `${k.algorithm}:${k.key}`;
  let p = cache.get(id);
  if (!p) {
    p = readKey(k);
    cache.set(id, p);
    p.catch(() => cache.delete(id));
  }
  return p;
}
