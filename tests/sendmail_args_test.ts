/**
 * Table tests for the sendmail shim's pure parts: every flag of the command
 * line (clustered, attached and separate values, legacy flags, unknown ones),
 * the -t extraction rules (Postfix: command-line recipients are added; only
 * Resent- fields when present), header completion, Bcc removal, the lone
 * dot, and the maildrop file format.
 */
import assert from "node:assert/strict";
import { parseSendmailArgs, UsageError } from "../lib/cli/sendmail_args.ts";
import { addressList, displayName, prepareMessage } from "../lib/cli/sendmail_message.ts";
import { decodeDrop, encodeDrop } from "../lib/maildrop/format.ts";
import { parsePasswd } from "../lib/sys/passwd.ts";
import { parseSelection } from "../lib/cli/queue.ts";

Deno.test("sendmail flags: each one parses as sendmail/Postfix do", () => {
  const p = parseSendmailArgs;
  assert.equal(p(["-t"]).extract, true);
  assert.equal(p(["-i"]).dotEnds, false);
  assert.equal(p(["-oi"]).dotEnds, false);
  assert.equal(p(["-ti"]).extract && !p(["-ti"]).dotEnds, true); // a cluster
  assert.equal(p(["-f", "a@b"]).sender, "a@b");
  assert.equal(p(["-fa@b"]).sender, "a@b");
  assert.equal(p(["-r", "<a@b>"]).sender, "a@b");
  assert.equal(p(["-f", "<>"]).sender, "");
  assert.equal(p(["-F", "Ann Example"]).fullName, "Ann Example");
  assert.equal(p(["-FCronDaemon"]).fullName, "CronDaemon");
  assert.equal(p(["-bm"]).mode, "deliver");
  assert.equal(p(["-bs"]).mode, "smtp");
  assert.equal(p(["-bp"]).mode, "queue-list");
  assert.equal(p(["-bi"]).mode, "newaliases");
  assert.equal(p(["-I"]).mode, "newaliases");
  assert.equal(p(["-bv", "x@y"]).mode, "verify");
  assert.equal(p(["-q"]).mode, "flush");
  assert.equal(p(["-qRexample.com"]).flushDomain, "example.com");
  assert.match(p(["-q30m"]).warnings[0], /-q30m/);
  assert.equal(p(["-v"]).verbose, true);
  assert.deepEqual(p(["-N", "success,failure"]).notify, ["SUCCESS", "FAILURE"]);
  assert.deepEqual(p(["-Nnever"]).notify, ["NEVER"]);
  assert.equal(p(["-R", "hdrs"]).ret, "HDRS");
  assert.equal(p(["-V", "env-1"]).envid, "env-1");
  assert.equal(p(["-B", "8bitmime"]).body, "8BITMIME");
  assert.match(p(["-oQ/var/spool"]).warnings[0], /-oQ\/var\/spool ignored/);
  assert.deepEqual(p(["-oem", "-odb", "-U", "-m"]).warnings, []);
  assert.equal(p(["-h", "5", "-L", "x", "-n", "-G"]).warnings.length, 4);
  assert.deepEqual(p(["-i", "--", "-odd@x", "b@y"]).recipients, ["-odd@x", "b@y"]);
  assert.deepEqual(p(["a@x", "-i", "b@y"]).recipients, ["a@x", "b@y"]);
});

Deno.test("sendmail flags: unknown or malformed ones are usage errors naming the option", () => {
  const bad: [string[], RegExp][] = [
    [["-Z"], /Unknown option -Z/],
    [["-tZ"], /Unknown option -Z/],
    [["-bt"], /Unknown option -bt/],
    [["-bd"], /daemon mode/],
    [["-C", "/etc/x.cf"], /-C/],
    [["-f"], /-f needs a value/],
    [["-N", "sometimes"], /-N needs/],
    [["-R", "body"], /-R needs/],
    [["-B", "binary"], /-B needs/],
    [["-V", "a b"], /-V needs/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseSendmailArgs(args),
      (e) => e instanceof UsageError && re.test(e.message),
    );
  }
});

const enc = new TextEncoder();
const dec = new TextDecoder();
const base = {
  dotEnds: true,
  extract: false,
  fromAddress: "ann@host.test",
  fullName: "",
  hostname: "host.test",
  now: Date.UTC(2026, 0, 2, 3, 4, 5),
};

Deno.test("message: Date, Message-ID and From are added when missing; CRLF; lone dot ends", () => {
  const r = prepareMessage(enc.encode("Subject: x\n\nline\n.\nafter dot\n"), {
    ...base,
    fullName: "Ann Example",
  });
  const text = dec.decode(r.content);
  assert.match(text, /^Subject: x\r\nDate: Fri, 2 Jan 2026 03:04:05 \+0000\r\n/);
  assert.match(text, /\r\nMessage-ID: <[^>]+@host\.test>\r\n/);
  assert.match(text, /\r\nFrom: Ann Example <ann@host\.test>\r\n\r\nline\r\n$/);
  const i = dec.decode(
    prepareMessage(enc.encode("Subject: x\n\n.\nafter\n"), {
      ...base,
      dotEnds: false,
    }).content,
  );
  assert.match(i, /\r\n\.\r\nafter\r\n$/);
  const kept = dec.decode(
    prepareMessage(enc.encode("From: Bob <b@x>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\nb\n"), base)
      .content,
  );
  assert.equal(kept.match(/^From:/gm)?.length, 1);
  assert.equal(kept.match(/^Date:/gm)?.length, 1);
});

Deno.test("message: -t takes To/Cc/Bcc, or only Resent- fields; Bcc is always removed", () => {
  const m = 'To: a@x, "B, b" <b@x>\nCc: grp: c@x, d@x;\nBcc: e@x\nSubject: s\n\nbody\n';
  const r = prepareMessage(enc.encode(m), { ...base, extract: true });
  assert.deepEqual(r.extracted, ["a@x", "b@x", "c@x", "d@x", "e@x"]);
  assert.doesNotMatch(dec.decode(r.content), /^Bcc:/m);
  const resent = "To: a@x\nResent-To: r@x\nResent-Bcc: s@x\n\nb\n";
  const rr = prepareMessage(enc.encode(resent), { ...base, extract: true });
  assert.deepEqual(rr.extracted, ["r@x", "s@x"]);
  assert.doesNotMatch(dec.decode(rr.content), /^Resent-Bcc:/m);
  const noT = prepareMessage(enc.encode("To: a@x\nBcc: e@x\n\nb\n"), base);
  assert.deepEqual(noT.extracted, []);
  assert.doesNotMatch(dec.decode(noT.content), /^Bcc:/m);
});

Deno.test("message: 8-bit bytes pass unchanged; display names are quoted or encoded", () => {
  const bytes = new Uint8Array([...enc.encode("Subject: s\n\n"), 0xe9, 0xff, 0x0a]);
  const out = prepareMessage(bytes, base).content;
  assert.deepEqual([...out.subarray(out.length - 4)], [0xe9, 0xff, 13, 10]);
  assert.equal(displayName("Ann Example"), "Ann Example");
  assert.equal(displayName("Example, Ann"), '"Example, Ann"');
  assert.match(displayName("Anné"), /^=\?UTF-8\?B\?/);
  assert.deepEqual(addressList(" x@y (Mr. X), <z@w>"), ["x@y", "z@w"]);
});

Deno.test("maildrop format round-trips and refuses what it does not know", () => {
  const env = {
    from: "a@x",
    recipients: [{ address: "b@y", notify: ["NEVER"] }],
    params: { RET: "HDRS" },
  };
  const d = decodeDrop(encodeDrop(env, enc.encode("Subject: s\r\n\r\nx\r\n")));
  assert.deepEqual(d.envelope, env);
  assert.equal(dec.decode(d.content), "Subject: s\r\n\r\nx\r\n");
  assert.throws(() => decodeDrop(enc.encode("junk\n{}\n")), /Not a maildrop file/);
  // One fault per case: the validator names the first it finds.
  assert.throws(
    () => decodeDrop(enc.encode('skiff-maildrop 1\n{"from":"a@x.test","recipients":[]}\n')),
    /recipients/,
  );
  assert.throws(
    () =>
      decodeDrop(
        enc.encode(
          'skiff-maildrop 1\n{"from":"a@x.test","recipients":[{"address":"b@y.test"}],"x":1}\n',
        ),
      ),
    /bad key "x"/,
  );
  assert.throws(
    () =>
      decodeDrop(
        enc.encode(
          'skiff-maildrop 1\n{"from":"a@x.test","recipients":[{"address":"b@y.test"}],"params":{"X":"1"}}\n',
        ),
      ),
    /params\.X: not allowed/,
  );
});

Deno.test("passwd parsing and queue selections", () => {
  const e = parsePasswd(
    "root:x:0:0:root:/root:/bin/sh\nann:x:1000:1000:Ann Example,,,:/home/ann:/bin/sh\n",
  );
  assert.equal(e[1].fullName, "Ann Example");
  assert.deepEqual(parseSelection(["--domain", "Example.COM"]), { domain: "example.com" });
  assert.deepEqual(parseSelection(["ALL"]), { all: true });
  assert.throws(() => parseSelection([]), /Name the messages/);
  assert.throws(() => parseSelection(["../etc"]), /Not a queue id/);
});
