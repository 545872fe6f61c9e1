/**
 * The AUTH command's exchange (RFC 4954 §4): PLAIN with or without an
 * initial response, LOGIN's two prompts, "*" to cancel. Failures are
 * counted per client IP and logged; a client over the limit is refused
 * with 454 before any password is checked.
 */
import type { AuthThrottle, Credentials, HashGate } from "../auth/credentials.ts";
import { decodeLoginField, decodePlain, encodeBase64Text, type SaslLogin } from "../auth/sasl.ts";
import { logEvent, logWarn } from "../log/log.ts";
import type { Action } from "./commands.ts";
import type { Identity } from "./policy.ts";
import { type Reply, reply } from "../wire/reply.ts";

/** What AUTH needs: the credentials (current after SIGHUP), the shared throttle and hash bound. */
export interface SaslContext {
  credentials: () => Credentials;
  throttle: AuthThrottle;
  gate: HashGate;
}

/** The session side: sends a 334 challenge and returns the client's line (null if malformed). */
export interface AuthIo {
  sasl: SaslContext;
  client: string;
  ask: (challenge: string) => Promise<string | null>;
}

const CANCELLED = reply(501, "5.0.0", "Authentication cancelled");
const MALFORMED = reply(501, "5.5.2", "Cannot decode response");

async function readLogin(
  a: Extract<Action, { kind: "auth" }>,
  io: AuthIo,
): Promise<SaslLogin | Reply> {
  if (a.mechanism === "PLAIN") {
    // RFC 4954 §4: "=" is an empty initial response; none means ask with an empty challenge.
    let resp = a.initial === "=" ? "" : a.initial;
    if (resp === null) resp = await io.ask("");
    if (resp === "*") return CANCELLED;
    return (resp !== null ? decodePlain(resp) : null) ?? MALFORMED;
  }
  let userResp = a.initial;
  if (userResp === null) userResp = await io.ask(encodeBase64Text("Username:"));
  if (userResp === "*") return CANCELLED;
  const user = userResp === null ? null : decodeLoginField(userResp);
  if (user === null) return MALFORMED;
  const passResp = await io.ask(encodeBase64Text("Password:"));
  if (passResp === "*") return CANCELLED;
  const password = passResp === null ? null : decodeLoginField(passResp);
  if (password === null) return MALFORMED;
  return { user, password };
}

/** Runs the exchange; the final reply, and the identity when it succeeded. */
export async function runAuth(
  a: Extract<Action, { kind: "auth" }>,
  io: AuthIo,
): Promise<{ reply: Reply; identity?: Identity }> {
  const ip = io.client;
  if (io.sasl.throttle.blocked(ip)) {
    logWarn("auth refused", { client: ip, reason: "too many failures" });
    return { reply: reply(454, "4.7.0", "Too many failed authentications; try again later") };
  }
  const login = await readLogin(a, io);
  if ("code" in login) return { reply: login };
  // Counted now, before the hash: the limit holds however many sessions try at once.
  const attempt = io.sasl.throttle.begin(ip);
  if (!attempt) {
    logWarn("auth refused", { client: ip, reason: "too many failures" });
    return { reply: reply(454, "4.7.0", "Too many failed authentications; try again later") };
  }
  const slot = io.sasl.gate.tryAcquire();
  if (!slot) {
    attempt.release();
    logWarn("auth refused", { client: ip, reason: "too many checks in progress" });
    return { reply: reply(454, "4.7.0", "Too many authentications in progress; try again later") };
  }
  let ok: boolean;
  try {
    ok = await io.sasl.credentials().verify(login.user, login.password);
  } catch (err) {
    attempt.release();
    throw err;
  } finally {
    slot();
  }
  if (ok) {
    attempt.release();
    logEvent("auth", { client: ip, user: login.user, mechanism: a.mechanism });
    return {
      reply: reply(235, "2.7.0", "Authentication successful"),
      identity: { kind: "sasl", name: login.user, trusted: false },
    };
  }
  const count = attempt.fail();
  // The name is logged as sent (JSON/key=value escaping keeps it on one line).
  logWarn("auth failed", { client: ip, user: login.user, mechanism: a.mechanism, failures: count });
  return { reply: reply(535, "5.7.8", "Authentication credentials invalid") };
}
