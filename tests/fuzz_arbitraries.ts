/**
 * fast-check arbitraries shared by the property and fuzz tests: valid
 * envelope pieces (what the SMTP server accepts, so what the spool and the
 * maildrop must accept too) and hostile strings (what none of them may let
 * through). `runs(n)` scales every fuzz test's count: FUZZ_RUNS sets the
 * count of the largest ones (`deno task fuzz` runs them long).
 */
import fc from "fast-check";
import type { Envelope, RecipientSpec } from "../lib/spool/mod.ts";

/** The run count: `n` in CI, FUZZ_RUNS (scaled by n / 1000) when set for a long run. */
export function runs(n: number): number {
  const env = Number(Deno.env.get("FUZZ_RUNS") ?? "");
  return Number.isFinite(env) && env > 0 ? Math.max(n, Math.round(env * n / 1000)) : n;
}

const ATEXT = "abcxyzABZ0129!#$%&'*+-/=?^_`{|}~".split("");
const atom = fc.array(fc.constantFrom(...ATEXT, "é", "ß", "中"), { minLength: 1, maxLength: 8 })
  .map((a) => a.join(""));
const dotString = fc.array(atom, { minLength: 1, maxLength: 3 }).map((a) => a.join("."));
const quoted = fc.array(fc.constantFrom("a", " ", '\\"', "\\\\", "@", ".", "<", ",", "ü"), {
  maxLength: 8,
}).map((a) => `"${a.join("")}"`);
const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/);
const domain = fc.oneof(
  { weight: 5, arbitrary: fc.array(label, { minLength: 1, maxLength: 4 }).map((a) => a.join(".")) },
  fc.constantFrom("[192.0.2.1]", "[IPv6:2001:db8::1]", "[IPv6:::ffff:192.0.2.1]", "bücher.example"),
);

/** A mailbox (RFC 5321 §4.1.2, RFC 6531) within the length limits. */
export const arbMailbox: fc.Arbitrary<string> = fc.tuple(fc.oneof(dotString, quoted), domain)
  .filter(([l, d]) => enc.encode(l).length <= 64 && enc.encode(`${l}@${d}`).length <= 254)
  .map(([l, d]) => `${l}@${d}`);
const enc = new TextEncoder();

/** An ESMTP NOTIFY list as the server stores it. */
export const arbNotify: fc.Arbitrary<string[]> = fc.oneof(
  fc.constant<string[]>(["NEVER"]),
  fc.subarray(["SUCCESS", "FAILURE", "DELAY"], { minLength: 1 }),
);

/** Text an ENVID or ORCPT may decode to: printable, any script, no controls. */
export const arbXtextText: fc.Arbitrary<string> = fc.string({
  unit: fc.oneof(
    fc.constantFrom("+", "=", " ", "a", "Z", "~", "!", "é", "€", "中", "😀", "\u200d"),
    fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }),
  ),
  minLength: 1,
  maxLength: 30,
}).filter((s) => !/[\p{Cc}\p{Cs}\p{Zl}\p{Zp}\uFFFD]|(?![\u200C\u200D])\p{Cf}/u.test(s));

/** A recipient as RCPT TO stores it. */
export const arbRecipient: fc.Arbitrary<RecipientSpec> = fc.record({
  address: fc.oneof({ weight: 9, arbitrary: arbMailbox }, fc.constant("postmaster")),
  notify: arbNotify,
  orcpt: arbMailbox.map((a) => `rfc822;${a}`),
}, { requiredKeys: ["address"] });

const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("", "unix"));
/** An envelope the SMTP server could have written. */
export const arbEnvelope: fc.Arbitrary<Envelope> = fc.record({
  id: fc.stringMatching(/^[0-9A-Z]{17}$/),
  from: fc.oneof(fc.constant(""), arbMailbox),
  recipients: fc.array(arbRecipient, { minLength: 1, maxLength: 4 }),
  received: fc.integer({ min: 0, max: 2 ** 45 }),
  client: fc.record({
    address: ip,
    helo: fc.oneof(fc.constant(""), fc.stringMatching(/^[\x21-\x7e]{1,40}$/)),
    auth: fc.stringMatching(/^[a-z0-9._@-]{1,20}$/),
  }, { requiredKeys: ["address", "helo"] }),
  protocol: fc.constantFrom("SMTP", "ESMTP", "ESMTPSA", "UTF8SMTP", "LMTP", "LOCAL", "DSN"),
  size: fc.nat(),
  params: fc.record({
    BODY: fc.constantFrom("7BIT", "8BITMIME"),
    SMTPUTF8: fc.constant("yes"),
    RET: fc.constantFrom("FULL", "HDRS"),
    ENVID: arbXtextText,
    destination: fc.constantFrom("discard:", "smtp:[127.0.0.1]:2525", "maildir:/var/mail"),
  }, { requiredKeys: [] }),
}, { requiredKeys: ["id", "from", "recipients", "received", "client", "protocol", "size"] })
  .map((e) => JSON.parse(JSON.stringify(e)));

/** Pieces an attacker splices into a field: line ends, NUL, commands, bidi overrides, C1. */
export const hostilePiece: fc.Arbitrary<string> = fc.constantFrom(
  "\r\n",
  "\r",
  "\n",
  "\0",
  " ",
  "\t",
  "\u0085",
  "\u2028",
  "\u202e",
  "\ufffd",
  "\r\nRSET\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<injected@example.net>",
  ">",
  "<",
  ",",
  "=",
  "+0D+0A",
  "+C2+85",
  "+FF",
);

/** A string with hostile pieces mixed into ordinary text. */
export const arbHostile: fc.Arbitrary<string> = fc.array(
  fc.oneof(hostilePiece, fc.string({ unit: "binary", maxLength: 6 }), arbMailbox),
  { minLength: 1, maxLength: 6 },
).map((a) => a.join(""));
