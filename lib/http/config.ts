/**
 * The [http] table: where the monitoring endpoint listens and who may read
 * it. Off by default; a loopback address unless the operator writes
 * `allow_remote = true`, because the status page shows senders, recipients
 * and error texts that are nobody else's business. Kept beside the server
 * (as [delivery] lives with the router); lib/config/load.ts calls these with
 * its own error reporter, so mistakes name the file and the dotted key.
 */
import { resolve } from "node:path";
import type { HostPort } from "../config/types.ts";

/** The monitoring endpoint's settings. */
export interface HttpConfig {
  /** Where to listen; null when the endpoint is off (`address = ""`). */
  address: HostPort | null;
  /** Permit a non-loopback address. */
  allowRemote: boolean;
  /** Bearer token every request must carry; "" for none. */
  token: string;
  /** A file holding the token (first line), read at start; "" for none. */
  tokenFile: string;
}

/** What the reader needs from load.ts. */
export interface HttpReaderContext {
  fail: (key: string, expected: string, found: unknown) => never;
  cwd: string;
  parseHostPort: (s: string) => HostPort | null;
  formatHostPort: (hp: HostPort) => string;
  inline: (v: unknown) => string;
}

const KEYS = ["address", "allow_remote", "token", "token_file"];
const ADDRESS = '"" (off) or a loopback "host:port" such as "127.0.0.1:8025" or "[::1]:8025"';

/** True for 127.0.0.0/8, ::1 (and its IPv4-mapped form) and "localhost". */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || /^(::ffff:)?127(\.[0-9]{1,3}){3}$/.test(h);
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Reads [http]; every mistake fails through ctx.fail. */
export function readHttp(ctx: HttpReaderContext, raw: unknown): HttpConfig {
  if (!isTable(raw)) ctx.fail("http", "a table [http]", raw);
  for (const k of Object.keys(raw)) {
    if (!KEYS.includes(k)) ctx.fail(`http.${k}`, `one of ${KEYS.join(", ")}`, "unknown key");
  }
  const str = (name: string, expected: string): string => {
    const v = raw[name];
    if (typeof v !== "string" || v.includes("\0")) ctx.fail(`http.${name}`, expected, v);
    return v;
  };
  const allowRemote = raw.allow_remote;
  if (typeof allowRemote !== "boolean") ctx.fail("http.allow_remote", "true or false", allowRemote);
  const text = str("address", ADDRESS);
  let address: HostPort | null = null;
  if (text !== "") {
    address = ctx.parseHostPort(text) ?? ctx.fail("http.address", ADDRESS, text);
    if (!allowRemote && !isLoopback(address.host)) {
      ctx.fail(
        "http.address",
        `a loopback address (127.0.0.1, [::1] or localhost); set http.allow_remote = true to serve ${text} beyond this host`,
        text,
      );
    }
  }
  const token = str("token", '"" or a bearer token');
  if (/[^\x21-\x7e]/.test(token)) {
    ctx.fail("http.token", "a token of printable characters without spaces", "another character");
  }
  const tokenFile = str("token_file", '"" or a file path');
  if (token !== "" && tokenFile !== "") {
    ctx.fail("http.token_file", '"" when http.token is set (give one of them)', tokenFile);
  }
  return {
    address,
    allowRemote,
    token,
    tokenFile: tokenFile === "" ? "" : resolve(ctx.cwd, tokenFile),
  };
}

/** [http] for `skiff check-config`. */
export function describeHttp(
  ctx: Pick<HttpReaderContext, "inline" | "formatHostPort">,
  h: HttpConfig,
): string[] {
  const kv = (k: string, v: unknown) => `${k} = ${ctx.inline(v)}`;
  return [
    "",
    "[http]",
    kv("address", h.address ? ctx.formatHostPort(h.address) : ""),
    kv("allow_remote", h.allowRemote),
    // Printed as given, like delivery.auth_password: check-config output must load back.
    kv("token", h.token),
    kv("token_file", h.tokenFile),
  ];
}

/** The bearer token the endpoint requires ("" for none): http.token, or token_file's first line. */
export async function loadToken(h: HttpConfig): Promise<string> {
  if (h.tokenFile === "") return h.token;
  let text: string;
  try {
    text = await Deno.readTextFile(h.tokenFile);
  } catch (err) {
    throw new Error(`Cannot read http.token_file ${h.tokenFile}: ${(err as Error).message}`);
  }
  const token = text.split("\n")[0].trim();
  if (token === "" || /[^\x21-\x7e]/.test(token)) {
    throw new Error(
      `http.token_file ${h.tokenFile} must hold a token of printable characters on its first line`,
    );
  }
  return token;
}
