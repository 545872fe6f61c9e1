/**
 * Table tests for SMTP command, path and mailbox parsing: what real clients
 * send must pass, and anything that could smuggle a control character or a
 * malformed address into the spool must get the right RFC 3463 reply.
 */

import assert from "node:assert/strict";
import { parseCommand, parseMailbox, parseMailFrom, parseRcptTo } from "../lib/wire/command.ts";
import type { Reply } from "../lib/wire/reply.ts";

Deno.test("parseCommand", async (t) => {
  const cases: [string, ReturnType<typeof parseCommand>][] = [
    ["EHLO mail.example.com", { verb: "EHLO", arg: "mail.example.com" }],
    ["ehlo x", { verb: "EHLO", arg: "x" }],
    ["MaIl FROM:<a@b>", { verb: "MAIL", arg: "FROM:<a@b>" }],
    ["DATA", { verb: "DATA", arg: "" }],
    ["RSET ", { verb: "RSET", arg: "" }],
    ["MAIL  FROM:<a@b>  ", { verb: "MAIL", arg: "FROM:<a@b>" }],
    ["starttls", { verb: "STARTTLS", arg: "" }],
    ["AUTH PLAIN dGVzdAB0ZXN0AHRlc3Q=", { verb: "AUTH", arg: "PLAIN dGVzdAB0ZXN0AHRlc3Q=" }],
    ["BDAT 100 LAST", { verb: "BDAT", arg: "100 LAST" }],
    ["LHLO x", { verb: "LHLO", arg: "x" }],
    ["GET / HTTP/1.1", { unknown: "GET" }],
    ["POST /x HTTP/1.0", { unknown: "POST" }],
    ["CONNECT a:25 HTTP/1.1", { unknown: "CONNECT" }],
    ["head /", { unknown: "HEAD" }],
    ["PUT x", { unknown: "PUT" }],
    ["", { unknown: "" }],
    [" NOOP", { unknown: "" }],
    ["NOOP\tx", { unknown: "NOOP\tx" }],
    ["XYZZY", { unknown: "XYZZY" }],
    // ASCII case folding only: U+017F and U+0131 upper-case to S and I.
    ["\u017ftarttls", { unknown: "\u017ftarttls" }],
    ["ma\u0131l FROM:<a@b>", { unknown: "ma\u0131l" }],
  ];
  for (const [line, want] of cases) {
    await t.step(JSON.stringify(line), () => assert.deepEqual(parseCommand(line), want));
  }
});

Deno.test("parseMailbox: good", async (t) => {
  const cases: [string, string, string][] = [
    ["a@b", "a", "b"],
    ["first.last@example.com", "first.last", "example.com"],
    ["a+tag@sub-domain.example", "a+tag", "sub-domain.example"],
    ["!#$%&'*+-/=?^_`{|}~@x", "!#$%&'*+-/=?^_`{|}~", "x"],
    ['"john doe"@example.com', '"john doe"', "example.com"],
    ['"a@b"@c', '"a@b"', "c"],
    ['"a\\"b"@c', '"a\\"b"', "c"],
    ['""@c', '""', "c"],
    ["u@[192.0.2.1]", "u", "[192.0.2.1]"],
    ["u@[IPv6:2001:db8::1]", "u", "[IPv6:2001:db8::1]"],
    ["u@[ipv6:1:2:3:4:5:6:7:8]", "u", "[ipv6:1:2:3:4:5:6:7:8]"],
    ["u@[IPv6:::1]", "u", "[IPv6:::1]"],
    ["u@[IPv6:::ffff:192.0.2.1]", "u", "[IPv6:::ffff:192.0.2.1]"],
    ["u@[IPv6:1:2:3:4:5:6:192.0.2.1]", "u", "[IPv6:1:2:3:4:5:6:192.0.2.1]"],
    ["jörg@bücher.example", "jörg", "bücher.example"], // RFC 6531
    ["用户@例子.广告", "用户", "例子.广告"],
    ["a@123.example", "a", "123.example"],
    [`${"l".repeat(64)}@x`, "l".repeat(64), "x"],
  ];
  for (const [s, local, domain] of cases) {
    await t.step(s, () => assert.deepEqual(parseMailbox(s), { local, domain }));
  }
});

Deno.test("parseMailbox: bad", async (t) => {
  const cases = [
    "",
    "a",
    "@b",
    "a@",
    "a@b@c",
    "a..b@c",
    ".a@c",
    "a.@c",
    "a b@c",
    "a@b c",
    "a@-b",
    "a@b-",
    "a@b..c",
    "a@b.",
    "a@.b",
    "a@b_c",
    '"a@b',
    '"a"b@c',
    '"a\r"@c',
    "a\r\n@b",
    "a@b\r\nRCPT TO:<x@y>",
    "a\0@b",
    "a\x7f@b",
    "a\u0085@b", // C1 control (NEL)
    "a\u2028@b",
    "a\u202e@b", // bidi override
    "a\ufffd@b", // what invalid UTF-8 decodes to
    "a\u00a0b@c", // NBSP outside quotes
    "a@\ud800",
    "a@[1.2.3]",
    "a@[256.1.1.1]",
    "a@[1.2.3.4.5]",
    "a@[IPv6:1:2:3:4:5:6:7]",
    "a@[IPv6:1:2:3:4:5:6:7:8:9]",
    "a@[IPv6:1::2::3]",
    "a@[IPv6:1:2:3:4:5:6:7::]",
    "a@[IPv6:12345::]",
    "a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]",
    "a@[tag:foo]",
    "a@[1.2.3.4",
    `${"l".repeat(65)}@x`,
    `a@${"d".repeat(64)}.example`,
    `a@${"abcdefghi.".repeat(26)}x`, // 261 octets
  ];
  for (const s of cases) {
    await t.step(JSON.stringify(s), () => assert.equal(parseMailbox(s), null));
  }
});

function params(...kv: [string, string | null][]): Map<string, string | null> {
  return new Map(kv);
}

Deno.test("parseMailFrom: good", async (t) => {
  const cases: [string, string, Map<string, string | null>][] = [
    ["FROM:<a@b>", "a@b", params()],
    ["from:<a@b>", "a@b", params()],
    ["FROM: <a@b>", "a@b", params()], // one space after the colon: common in the wild
    ["FROM:<>", "", params()],
    ["FROM:<> BODY=8BITMIME", "", params(["BODY", "8BITMIME"])],
    [
      "FROM:<a@b> SIZE=123 body=8BITMIME smtputf8",
      "a@b",
      params(["SIZE", "123"], ["BODY", "8BITMIME"], ["SMTPUTF8", null]),
    ],
    ["FROM:<a@b>  SIZE=1 ", "a@b", params(["SIZE", "1"])],
    ["FROM:<a@b> ENVID=QQ314159+2Bx", "a@b", params(["ENVID", "QQ314159+2Bx"])],
    ["FROM:<@relay.example,@[192.0.2.1]:a@b>", "a@b", params()], // source route dropped
    ["FROM:<@a:u@b>", "u@b", params()],
    ['FROM:<"x > y"@b>', '"x > y"@b', params()],
    ["FROM:<jörg@bücher.example> SMTPUTF8", "jörg@bücher.example", params(["SMTPUTF8", null])],
  ];
  for (const [arg, address, p] of cases) {
    await t.step(arg, () => assert.deepEqual(parseMailFrom(arg), { address, params: p }));
  }
});

const MAIL_SYNTAX = { code: 501, enhanced: "5.5.4", text: "Syntax: MAIL FROM:<address>" };
const BAD_SENDER = { code: 501, enhanced: "5.1.7", text: "Bad sender address syntax" };
const BAD_PARAM = { code: 501, enhanced: "5.5.4", text: "Bad ESMTP parameter syntax" };
const BAD_CHAR = {
  code: 501,
  enhanced: "5.5.2",
  text: "Syntax error: control or invalid character",
};

Deno.test("parseMailFrom: bad", async (t) => {
  const cases: [string, Reply][] = [
    ["", MAIL_SYNTAX],
    ["FROM", MAIL_SYNTAX],
    ["FROM:a@b", MAIL_SYNTAX], // angle brackets are required
    ["FROM:<a@b", MAIL_SYNTAX],
    ["FROM:  <a@b>", MAIL_SYNTAX], // only one space is tolerated
    ["FROM :<a@b>", MAIL_SYNTAX],
    ["TO:<a@b>", MAIL_SYNTAX],
    ["FROM:<a@b>SIZE=1", MAIL_SYNTAX],
    ["FROM:<postmaster>", BAD_SENDER],
    ["FROM:<a>", BAD_SENDER],
    ["FROM:<a@b c>", BAD_SENDER],
    ["FROM:<@a>", BAD_SENDER],
    ["FROM:<@a,b:u@c>", BAD_SENDER],
    ["FROM:<@-a:u@c>", BAD_SENDER],
    ["FROM:<a@b> SIZE=", BAD_PARAM],
    ["FROM:<a@b> =1", BAD_PARAM],
    ["FROM:<a@b> -X=1", BAD_PARAM],
    ["FROM:<a@b> X_Y=1", BAD_PARAM],
    ["FROM:<a@b> X=a=b", BAD_PARAM],
    ["FROM:<a@b> SIZE=1 size=2", {
      code: 501,
      enhanced: "5.5.4",
      text: "Duplicate ESMTP parameter SIZE",
    }],
    ["FROM:<a@b\r\n>", BAD_CHAR],
    ["FROM:<a@b> X=\0", BAD_CHAR],
    ["FROM:<a@b> X=\u0085", BAD_CHAR],
    ["FROM:<\ufffd@b>", BAD_CHAR],
    ["FROM:<a@b> X=\u202e", BAD_CHAR],
    [`FROM:<${"l".repeat(65)}@b>`, {
      code: 501,
      enhanced: "5.1.7",
      text: "Sender address too long",
    }],
    [`FROM:<a@${"abcdefghi.".repeat(25)}example>`, {
      code: 501,
      enhanced: "5.1.7",
      text: "Sender address too long",
    }],
  ];
  for (const [arg, want] of cases) {
    await t.step(JSON.stringify(arg), () => assert.deepEqual(parseMailFrom(arg), want));
  }
});

Deno.test("parseRcptTo", async (t) => {
  const RCPT_SYNTAX = { code: 501, enhanced: "5.5.4", text: "Syntax: RCPT TO:<address>" };
  const BAD_RCPT = { code: 501, enhanced: "5.1.3", text: "Bad recipient address syntax" };
  const cases: [string, Reply | { address: string; params: Map<string, string | null> }][] = [
    ["TO:<a@b>", { address: "a@b", params: params() }],
    ["to: <a@b>", { address: "a@b", params: params() }],
    ["TO:<Postmaster>", { address: "postmaster", params: params() }], // RFC 5321 §4.1.1.3
    ["TO:<postmaster@example.com>", { address: "postmaster@example.com", params: params() }],
    ["TO:<@hop:a@b>", { address: "a@b", params: params() }],
    [
      "TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b",
      { address: "a@b", params: params(["NOTIFY", "SUCCESS,FAILURE"], ["ORCPT", "rfc822;a@b"]) },
    ],
    ["TO:<>", BAD_RCPT], // no null forward-path
    ["TO:<postmaster", RCPT_SYNTAX],
    ["TO:a@b", RCPT_SYNTAX],
    ["FROM:<a@b>", RCPT_SYNTAX],
    ["TO:<a@@b>", BAD_RCPT],
    ["TO:<a@b> NOTIFY=NEVER NOTIFY=NEVER", {
      code: 501,
      enhanced: "5.5.4",
      text: "Duplicate ESMTP parameter NOTIFY",
    }],
    [`TO:<${"l".repeat(65)}@b>`, {
      code: 501,
      enhanced: "5.1.3",
      text: "Recipient address too long",
    }],
    ["TO:<a@b>\0", BAD_CHAR],
  ];
  for (const [arg, want] of cases) {
    await t.step(JSON.stringify(arg), () => assert.deepEqual(parseRcptTo(arg), want));
  }
});
