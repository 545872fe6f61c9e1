/**
 * The SASL credentials file: one `user:scrypt$N$r$p$salt$hash` line per
 * user (salt and hash base64), `#` comments and blank lines ignored. Hashes
 * are scrypt from node:crypto (RFC 7914) with a per-user random salt, so the
 * file never holds a password and a stolen copy resists guessing. A user
 * that is not in the file still costs one scrypt, so timing does not tell
 * which user names exist.
 */
import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** scrypt cost parameters: N=2^15, r=8, p=1 (about 32 MiB, tens of ms). */
const N = 32768;
const R = 8;
const P = 1;
const KEYLEN = 32;
const MAXMEM = 64 * 1024 * 1024;

function derive(password: string, salt: Uint8Array, n: number, r: number, p: number) {
  return new Promise<Uint8Array>((resolve, reject) =>
    scrypt(
      password,
      salt,
      KEYLEN,
      { N: n, r, p, maxmem: MAXMEM },
      (err, key) => err ? reject(err) : resolve(new Uint8Array(key)),
    )
  );
}

const b64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const unb64 = (s: string) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** Makes the hash part of a credentials line for a password. */
export async function hashPassword(password: string): Promise<string> {
  const salt = new Uint8Array(randomBytes(16));
  const key = await derive(password, salt, N, R, P);
  return `scrypt$${N}$${R}$${P}$${b64(salt)}$${b64(key)}`;
}

interface Entry {
  n: number;
  r: number;
  p: number;
  salt: Uint8Array;
  key: Uint8Array;
}

function parseHash(h: string): Entry | null {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(h);
  if (!m) return null;
  const [n, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  // Bounded: a hostile file must not make one check take gigabytes.
  if (n < 2 || n > 1 << 20 || (n & (n - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) {
    return null;
  }
  try {
    return { n, r, p, salt: unb64(m[4]), key: unb64(m[5]) };
  } catch {
    return null;
  }
}

/** The users of a credentials file, checked with scrypt. */
export class Credentials {
  #users = new Map<string, Entry>();
  #dummy: Entry = { n: N, r: R, p: P, salt: new Uint8Array(16), key: new Uint8Array(KEYLEN) };

  /** Parses the file text; bad lines are reported through `warn` and skipped. */
  constructor(text = "", warn: (msg: string) => void = () => {}) {
    text.split("\n").forEach((raw, i) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      const colon = line.indexOf(":");
      const entry = colon > 0 ? parseHash(line.slice(colon + 1)) : null;
      if (!entry) return warn(`credentials line ${i + 1} is not "user:scrypt$..."`);
      this.#users.set(line.slice(0, colon), entry);
    });
  }

  /** Reads a credentials file; "" gives an empty set. */
  static async load(path: string, warn?: (msg: string) => void): Promise<Credentials> {
    if (path === "") return new Credentials();
    return new Credentials(await Deno.readTextFile(path), warn);
  }

  /** Number of users. */
  get size(): number {
    return this.#users.size;
  }

  /** True when the user exists and the password matches. */
  async verify(user: string, password: string): Promise<boolean> {
    const e = this.#users.get(user);
    const use = e ?? this.#dummy;
    const key = await derive(password, use.salt, use.n, use.r, use.p);
    return e !== undefined && key.length === e.key.length && timingSafeEqual(key, e.key);
  }
}

/**
 * Failed AUTH attempts per client IP within a window: after `max` of them,
 * AUTH is refused without checking until the oldest ages out.
 */
export class AuthThrottle {
  #fails = new Map<string, number[]>();
  #max: number;
  #windowMs: number;

  constructor(max: number, windowSeconds: number) {
    this.#max = max;
    this.#windowMs = windowSeconds * 1000;
  }

  #recent(client: string, now: number): number[] {
    const list = (this.#fails.get(client) ?? []).filter((t) => now - t < this.#windowMs);
    if (list.length === 0) this.#fails.delete(client);
    else this.#fails.set(client, list);
    return list;
  }

  /** True when the client has used up its failed attempts. */
  blocked(client: string, now = Date.now()): boolean {
    return this.#recent(client, now).length >= this.#max;
  }

  /** Records one failure; returns the client's count in the window. */
  fail(client: string, now = Date.now()): number {
    const list = this.#recent(client, now);
    list.push(now);
    this.#fails.set(client, list);
    // Bounded memory under a spray of clients: forget the oldest entries.
    if (this.#fails.size > 10_000) this.#fails.delete(this.#fails.keys().next().value!);
    return list.length;
  }
}
