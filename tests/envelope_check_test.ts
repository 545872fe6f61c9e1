/**
 * Table tests for the envelope validator shared by maildrop files and spool
 * journals (lib/smtp/envelope_check.ts), for xtext decoding as octets then
 * UTF-8 (issue 9 finding 7) and for the client's command builder.
 */
import assert from "node:assert/strict";
import { decodeDrop, MaildropError } from "../lib/maildrop/format.ts";
import { rcptCommand } from "../lib/smtp/client_params.ts";
import { checkEnvelope, EnvelopeError } from "../lib/smtp/envelope_check.ts";
import { decodeXtextChecked, encodeXtext, mailParams } from "../lib/smtp/params.ts";
import { parseMailFrom } from "../lib/smtp/command.ts";
import type { Envelope } from "../lib/spool/mod.ts";

const INJECTED =
  "SUCCESS\r\nRSET\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<injected@example.net>";

Deno.test("xtext decodes to octets, then UTF-8; controls and bad UTF-8 refused (table)", () => {
  const cases: [string, string | RegExp][] = [
    ["abc", "abc"],
    ["a+2Bb+3Dc", "a+b=c"],
    ["x+C2+A9y", "x©y"], // one character, not the Latin-1 pair U+00C2 U+00A9
    ["+E2+82+AC", "€"],
    ["+F0+9F+98+80", "😀"],
    ["é+C3+A9", "éé"], // RFC 6533: UTF-8 as such, mixed with hex octets
    ["x+C2+85y", /control/], // U+0085 NEL, a C1 control: the issue's example
    ["+0D+0ARSET", /control/],
    ["a+00b", /control/],
    ["+E2+80+AE", /control or invisible/], // U+202E right-to-left override
    ["x+C2y", /invalid UTF-8/],
    ["+FF", /invalid UTF-8/],
    ["+ED+A0+80", /invalid UTF-8/], // an encoded surrogate
    ["+C0+AF", /invalid UTF-8/], // an overlong "/"
    ["x+c2+a9", /two hex digits/],
    ["x+2", /two hex digits/],
    ["a=b", /not xtext/],
    ["a b", /not xtext/],
  ];
  for (const [input, want] of cases) {
    const got = decodeXtextChecked(input);
    if (typeof want === "string") assert.deepEqual(got, { text: want }, input);
    else assert.ok("error" in got && want.test(got.error), `${input}: ${JSON.stringify(got)}`);
  }
});

Deno.test("ENVID is stored as UTF-8 text and refused with a 501 naming why", () => {
  const envid = (v: string) => {
    const p = parseMailFrom(`FROM:<a@b.example> ENVID=${v}`);
    assert.ok(!("code" in p));
    return mailParams(p.params, { maxSize: 1000 });
  };
  assert.deepEqual(envid("x+C2+A9y"), { smtputf8: false, envid: "x©y" });
  assert.deepEqual(envid("x+C2+85y"), {
    code: 501,
    enhanced: "5.5.4",
    text: "Bad ENVID parameter: decodes to a control or invisible character",
  });
});

Deno.test("xtext encoding is ASCII and round-trips (table)", () => {
  const cases: [string, string][] = [
    ["abc", "abc"],
    ["a+b=c d", "a+2Bb+3Dc+20d"],
    ["x©y", "x+C2+A9y"],
    ["€", "+E2+82+AC"],
    ["😀", "+F0+9F+98+80"],
  ];
  for (const [text, wire] of cases) {
    assert.equal(encodeXtext(text), wire);
    assert.deepEqual(decodeXtextChecked(wire), { text });
  }
});

const ENV: Envelope = {
  id: "0000000000000ABCD",
  from: "alice@example.org",
  recipients: [{
    address: "bob@example.net",
    notify: ["FAILURE"],
    orcpt: "rfc822;bob@example.net",
  }],
  received: 1_700_000_000_000,
  client: { address: "192.0.2.7", helo: "mx.example.org", auth: "alice" },
  protocol: "ESMTP",
  size: 42,
  params: { BODY: "8BITMIME", RET: "HDRS", ENVID: "x©y", SMTPUTF8: "yes" },
};
const rcpt = (r: Partial<Envelope["recipients"][0]>) => ({
  recipients: [{ address: "bob@example.net", ...r }],
});

Deno.test("envelope check: what the SMTP server accepts passes", () => {
  const ok: Partial<Envelope>[] = [
    {},
    { from: "" },
    { from: '"john doe"@example.org' },
    { from: "jörg@bücher.example" },
    rcpt({ address: "postmaster" }),
    rcpt({ address: "x@[192.0.2.1]" }),
    rcpt({ notify: ["NEVER"] }),
    rcpt({ notify: ["SUCCESS", "FAILURE", "DELAY"] }),
    rcpt({ orcpt: "rfc822;jörg+1@example.net" }),
    { client: { address: "::1", helo: "" } },
    { client: { address: "unix", helo: "h" } },
    { client: { address: "", helo: "", auth: "bob" }, protocol: "LOCAL" },
    { params: { destination: "lmtp:unix:/run/lmtp", peer_uid: "1000" } },
    {
      protocol: "ALIAS",
      recipients: [
        { address: "bob" },
        { address: '|{"command":["/usr/bin/procmail","-a"],"user":null}' },
        { address: '|{"file":"/var/mail/bob","user":{"name":"bob","uid":1000,"gid":1000}}' },
      ],
    },
  ];
  for (const change of ok) checkEnvelope({ ...ENV, ...change });
});

Deno.test("envelope check: what the SMTP server refuses is named (table)", () => {
  const bad: [string, Partial<Envelope>][] = [
    ["recipient 1 NOTIFY", rcpt({ notify: [INJECTED] })],
    ["recipient 1 NOTIFY", rcpt({ notify: ["SUCCESS,DELAY"] })],
    ["recipient 1 NOTIFY", rcpt({ notify: ["success"] })],
    ["recipient 1 NOTIFY", rcpt({ notify: ["NEVER", "SUCCESS"] })],
    ["recipient 1 NOTIFY", rcpt({ notify: [] })],
    ["recipient 1 ORCPT", rcpt({ orcpt: "rfc822;a\u0085b" })],
    ["recipient 1 ORCPT", rcpt({ orcpt: "nosemicolon" })],
    ["recipient 1 ORCPT", rcpt({ orcpt: "rfc 822;a@b" })],
    ["recipient 1", rcpt({ address: "" })],
    ["recipient 1", rcpt({ address: "bob@example.net> NOTIFY=SUCCESS" })],
    ["recipient 1", rcpt({ address: "@relay.example:bob@example.net" })],
    ["recipient 1", rcpt({ address: "bob" })],
    ["recipient 1", rcpt({ address: "bob@example.net\r\nRSET" })],
    ["recipient 1", rcpt({ address: '|{"command":["/bin/sh"],"user":null}' })], // not ALIAS
    ["from", { from: "alice@example.org\r\nRSET" }],
    ["from", { from: "<alice@example.org>" }],
    ["from", { from: "a".repeat(65) + "@example.org" }],
    ["params.ENVID", { params: { ENVID: "x\u0085y" } }],
    ["params.ENVID", { params: { ENVID: "x".repeat(101) } }],
    ["params.RET", { params: { RET: "FULL\r\nRSET" } }],
    ["params.RET", { params: { RET: "full" } }],
    ["params.BODY", { params: { BODY: "BINARYMIME" } }],
    ["params.SMTPUTF8", { params: { SMTPUTF8: "no" } }],
    ["params.NOTIFY", { params: { NOTIFY: "SUCCESS" } }],
    ["params.destination", { params: { destination: "pipe:/bin/sh" } }],
    ["params.peer_uid", { params: { peer_uid: "-1" } }],
    ["client.address", { client: { address: "evil\r\n", helo: "h" } }],
    ["client.helo", { client: { address: "192.0.2.1", helo: "a b" } }],
    ["client.auth", { client: { address: "192.0.2.1", helo: "h", auth: "a\nb" } }],
    ["id", { id: "../etc/passwd" }],
    ["size", { size: -1 }],
    ["protocol", { protocol: "ESMTP\r\n" }],
    ["recipients", { recipients: [] }],
  ];
  for (const [field, change] of bad) {
    assert.throws(
      () => checkEnvelope({ ...ENV, ...change }),
      (e: unknown) => e instanceof EnvelopeError && e.field === field,
      `${field}: ${JSON.stringify(change)}`,
    );
  }
  const alias = (address: string) => ({ ...ENV, protocol: "ALIAS", ...rcpt({ address }) });
  for (
    const address of [
      '|{"command":["sh","-c","x"],"user":null}',
      '|{"command":["/bin/x\\n"],"user":null}',
      '|{"file":"relative","user":null}',
      '|{"command":["/bin/x"],"file":"/x","user":null}',
      "|not json",
      "bo b",
    ]
  ) {
    assert.throws(() => checkEnvelope(alias(address)), EnvelopeError, address);
  }
});

Deno.test("maildrop: the issue's NOTIFY injection is refused, naming the field", () => {
  const file = (env: unknown) =>
    new TextEncoder().encode(`skiff-maildrop 1\n${JSON.stringify(env)}\nbody\r\n`);
  const refused = (env: unknown, field: string, text: RegExp) =>
    assert.throws(() => decodeDrop(file(env)), (e: unknown) => {
      assert.ok(e instanceof MaildropError);
      assert.equal(e.field, field);
      assert.match(e.message, text);
      return true;
    });
  refused(
    { from: "a@b.example", recipients: [{ address: "c@d.example", notify: [INJECTED] }] },
    "recipient 1 NOTIFY",
    /Bad envelope recipient 1 NOTIFY: "SUCCESS\\r\\nRSET\\r\\nMAIL FROM:.*501 5\.5\.2/,
  );
  refused(
    { from: "a@b.example", recipients: [{ address: "c@d.example" }], params: { ENVID: "a\rb" } },
    "params.ENVID",
    /ENVID/,
  );
  refused(
    { from: "a@b.example", recipients: [{ address: "c@d.example" }], params: { SIZE: "1" } },
    "params.SIZE",
    /not allowed here/,
  );
  refused(
    { from: "a@b.example", recipients: [{ address: "postmaster" }] },
    "recipient 1",
    /local@domain/,
  );
  refused(
    { from: "a@b.example", recipients: [{ address: "c@d.example", orcpt: "x" }] },
    "recipient 1",
    /recipient 1/,
  );
  refused(
    { from: "a@b.example", recipients: [{ address: "c@d.example" }], x: 1 },
    'key "x"',
    /key/,
  );
  const ok = decodeDrop(file({
    from: "",
    recipients: [{ address: "c@d.example", notify: ["SUCCESS", "DELAY"] }],
    params: { RET: "HDRS", ENVID: "id-1", BODY: "8BITMIME" },
  }));
  assert.deepEqual(ok.envelope.recipients, [{
    address: "c@d.example",
    notify: ["SUCCESS", "DELAY"],
  }]);
});

Deno.test("client: RCPT lines carry only grammar-clean parameters (table)", () => {
  const cases: [string, { notify?: string[]; orcpt?: string } | undefined, string | RegExp][] = [
    ["b@x.example", undefined, "RCPT TO:<b@x.example>"],
    [
      "b@x.example",
      { notify: ["SUCCESS", "FAILURE"] },
      "RCPT TO:<b@x.example> NOTIFY=SUCCESS,FAILURE",
    ],
    ["b@x.example", { orcpt: "rfc822;jörg@x" }, "RCPT TO:<b@x.example> ORCPT=rfc822;j+C3+B6rg@x"],
    ["b@x.example", { orcpt: "rfc822;a\r\nb" }, "RCPT TO:<b@x.example> ORCPT=rfc822;a+0D+0Ab"],
    ["b@x.example", { notify: [INJECTED] }, /^Invalid NOTIFY "SUCCESS\\r\\nRSET/],
    ["b@x.example", { notify: ["SUCCESS FOO=1"] }, /^Invalid NOTIFY/],
    ["b@x.example", { orcpt: "rfc 822;x" }, /^Invalid ORCPT/],
    ["b@x.example\r\nRSET", undefined, /^Invalid recipient address/],
    ["b\u2028@x.example", undefined, /^Invalid recipient address/],
  ];
  for (const [address, extra, want] of cases) {
    const got = rcptCommand(address, extra, { dsn: true });
    if (typeof want === "string") assert.deepEqual(got, { line: want });
    else assert.ok("error" in got && want.test(got.error), JSON.stringify(got));
  }
});
