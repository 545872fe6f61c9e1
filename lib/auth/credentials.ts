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

/** scrypt cost parameters of a new hash (each line of the file carries its own). */
export interface ScryptCost {
  /** CPU/memory cost, a power of 2 (default 2^15). */
  N: number;
  /** Block size (default 8). */
  r: number;
  /** Parallelism (default 1). */
  p: number;
}

/**
 * Makes the hash part of a credentials line for a password. `cost` is for
 * tests only (a cheap hash keeps them quick on a loaded machine); `skiff
 * passwd` always uses the default.
 */
export async function hashPassword(
  password: string,
  cost: ScryptCost = { N, r: R, p: P },
): Promise<string> {
  const salt = new Uint8Array(randomBytes(16));
  const key = await derive(password, salt, cost.N, cost.r, cost.p);
  return `scrypt$${cost.N}$${cost.r}$${cost.p}$${b64(salt)}$${b64(key)}`;
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
 * The network a client's AUTH attempts are counted against: its IPv4 /24 or
 * IPv6 /64 (an IPv4-mapped IPv6 address counts as IPv4), so a guesser
 * cannot pass the limit by hopping between neighbouring addresses it owns.
 * Anything else (a unix socket's "unix:uid=...") is its own key.
 */
export function throttleKey(client: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(client);
  const v4 = mapped ? mapped[1] : client;
  const m = /^(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}$/.exec(v4);
  if (m) return `${m[1]}.0/24`;
  if (!client.includes(":") || client.startsWith("unix")) return client;
  const [head, tail] = client.toLowerCase().split("::");
  const left = head ? head.split(":") : [];
  const right = tail === undefined ? [] : tail ? tail.split(":") : [];
  const groups = tail === undefined
    ? left
    : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill("0"), ...right];
  if (groups.length !== 8) return client;
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** One AUTH attempt admitted by AuthThrottle.begin: settle it once the check is done. */
export interface AuthAttempt {
  /** The check failed: the attempt stays counted as a failure for the window. */
  fail(): number;
  /** The check passed, or never ran: the attempt no longer counts. */
  release(): void;
}

/**
 * Failed AUTH attempts per client network (throttleKey) within a window.
 * An attempt is counted when it starts, before its password is checked, so
 * parallel sessions cannot all pass the check while the slow hash runs:
 * failures plus attempts in progress may not exceed `max`; beyond that AUTH
 * is refused without checking until the oldest failure ages out.
 */
export class AuthThrottle {
  #fails = new Map<string, number[]>();
  #inFlight = new Map<string, number>();
  #max: number;
  #windowMs: number;

  constructor(max: number, windowSeconds: number) {
    this.#max = max;
    this.#windowMs = windowSeconds * 1000;
  }

  #recent(key: string, now: number): number[] {
    const list = (this.#fails.get(key) ?? []).filter((t) => now - t < this.#windowMs);
    if (list.length === 0) this.#fails.delete(key);
    else this.#fails.set(key, list);
    return list;
  }

  /** True when the client's network has used up its attempts (failed or in progress). */
  blocked(client: string, now = Date.now()): boolean {
    const key = throttleKey(client);
    return this.#recent(key, now).length + (this.#inFlight.get(key) ?? 0) >= this.#max;
  }

  /** Admits one attempt, counted at once; null when the network is over its limit. */
  begin(client: string, now = Date.now()): AuthAttempt | null {
    if (this.blocked(client, now)) return null;
    const key = throttleKey(client);
    this.#inFlight.set(key, (this.#inFlight.get(key) ?? 0) + 1);
    let settled = false;
    const settle = () => {
      if (settled) return false;
      settled = true;
      const n = (this.#inFlight.get(key) ?? 1) - 1;
      if (n <= 0) this.#inFlight.delete(key);
      else this.#inFlight.set(key, n);
      return true;
    };
    return {
      fail: () => settle() ? this.#record(key, Date.now()) : this.#recent(key, Date.now()).length,
      release: () => void settle(),
    };
  }

  /** Records one failure for the client's network; returns its count in the window. */
  fail(client: string, now = Date.now()): number {
    return this.#record(throttleKey(client), now);
  }

  #record(key: string, now: number): number {
    const list = this.#recent(key, now);
    list.push(now);
    this.#fails.set(key, list);
    // Bounded memory under a spray of clients: forget the oldest entries.
    if (this.#fails.size > 10_000) this.#fails.delete(this.#fails.keys().next().value!);
    return list.length;
  }
}

/**
 * A global bound on password checks running at once. Each scrypt holds
 * about 32 MiB for ~150 ms on a worker thread: 90 parallel attempts once
 * took the manager from 103 to 511 MB. An attempt that finds every slot
 * taken is refused at once (454, try again) rather than queued, so waiting
 * attempts cannot pile up either.
 */
export class HashGate {
  #busy = 0;
  #max: number;
  /** The most checks seen running at once (for tests and `skiff status`). */
  peak = 0;

  constructor(max: number) {
    this.#max = max;
  }

  /** Checks running now. */
  get busy(): number {
    return this.#busy;
  }

  /** Takes a slot; null when all are busy. Call the returned function once to give it back. */
  tryAcquire(): (() => void) | null {
    if (this.#busy >= this.#max) return null;
    this.#busy++;
    this.peak = Math.max(this.peak, this.#busy);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#busy--;
    };
  }
}
