/**
 * skiff's SMTP and LMTP clients against Postfix as the receiver, through
 * the QueueManager: a private Postfix instance (tests/postfix.ts) whose
 * smtpd accepts mail for pf.test, refuses a recipient missing from its
 * relay recipient table, and hands what it accepted to its `discard`
 * transport — Postfix's own maillog is the proof of what it took; and
 * Postfix's smtp-sink speaking LMTP (`-L`) taking one message for several
 * recipients (one reply each after the data).
 */
import assert from "node:assert/strict";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import { maildirFiles, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, testConfig } from "./delivery_peers.ts";
import { PostfixInstance } from "./postfix.ts";
import { Sink } from "./sink.ts";

peerTest(
  "Postfix smtpd as the receiver: accepted (its maillog), a refused recipient bounced",
  [PEERS.postfix],
  async () => {
    const pf = await PostfixInstance.start({
      mainCf: `relay_domains = pf.test
relay_recipient_maps = inline:{ok1@pf.test=x, ok2@pf.test=x, ok3@pf.test=x}
relay_transport = discard:accepted by the skiff test
smtpd_forbid_bare_newline_exclusions =
`,
    });
    const dir = await Deno.makeTempDir({ prefix: "skiff-pfrecv-" });
    try {
      const cfg = testConfig(
        dir,
        `[[route]]\ndomain = "pf.test"\ntype = "smtp"\nhost = "127.0.0.1:${pf.port}"\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      // A body with leading dots, a bare-LF line and 8-bit text: dot-stuffing and CRLF repair.
      const body = "Subject: to postfix\r\n\r\n.one dot\r\n..two dots\r\nbare\nlf\r\n" +
        "x".repeat(3000) + "\r\n.\r\n";
      const id = await spoolMessage(spool, {
        from: "alice@localhost",
        to: ["ok1@pf.test", "nobody-here@pf.test", "ok2@pf.test"],
      }, body);
      const id2 = await spoolMessage(spool, { from: "alice@localhost", to: ["ok3@pf.test"] });
      const m = new QueueManager({ config: cfg, spool });
      await m.scan();
      await m.idle();
      await m.stop();
      assert.deepEqual(await spool.list(), []);
      assert.ok(id && id2);

      // Postfix logs one line per accepted recipient it passed to discard.
      const log = await waitFor(
        async () => {
          const l = await pf.maillog();
          const sent = (l.match(/status=sent \(accepted by the skiff test\)/g) ?? []).length;
          return sent >= 3 && /rcpt=2\/3 bdat=1 quit=1/.test(l) ? l : null;
        },
        20_000,
        "Postfix to log three discarded recipients",
      );
      for (const r of ["ok1", "ok2", "ok3"]) {
        assert.match(log, new RegExp(`to=<${r}@pf\\.test>, relay=none, .*status=sent`));
      }
      assert.doesNotMatch(log, /to=<nobody-here@pf\.test>.*status=sent/);
      assert.match(log, /: reject: RCPT from .*<nobody-here@pf\.test>: .*User unknown/);
      // Postfix offers CHUNKING, so the content went as BDAT (no dot-stuffing needed).
      assert.match(log, /disconnect from .* rcpt=2\/3 bdat=1 quit=1/);
      assert.doesNotMatch(log, /bare <LF>|improper command pipelining/);

      const bounces = await maildirFiles(`${dir}/mail/alice`);
      assert.equal(bounces.length, 1);
      const b = await Deno.readTextFile(bounces[0]);
      assert.match(
        b,
        /Final-Recipient: rfc822; nobody-here@pf\.test\nAction: failed\nStatus: 5\.1\.1/,
      );
      assert.match(b, /Remote-MTA: dns; 127\.0\.0\.1/);
      assert.match(b, /Diagnostic-Code: smtp; 550 5\.1\.1 <nobody-here@pf\.test>/);
    } finally {
      await pf.stop();
      await pf.cleanup();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

peerTest(
  "LMTP to smtp-sink -L: one transaction, several recipients, one reply each",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start({ lmtp: true });
    const dir = await Deno.makeTempDir({ prefix: "skiff-sinklmtp-" });
    try {
      const cfg = testConfig(
        dir,
        `[[route]]\ndomain = "sink.test"\ntype = "lmtp"\nhost = "127.0.0.1:${sink.port}"\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const to = ["a@sink.test", "b@sink.test", "c@sink.test", "d@sink.test"];
      const id = await spoolMessage(
        spool,
        { from: "alice@localhost", to },
        "Subject: lmtp\r\n\r\n.dot\r\n",
      );
      const m = new QueueManager({ config: cfg, spool });
      await m.scan();
      await m.idle();
      await m.stop();
      assert.deepEqual(await spool.list(), [], "every recipient delivered");
      const msgs = await waitFor(
        async () => {
          const x = await sink.messages();
          return x.length >= 1 ? x : null;
        },
        10_000,
        "smtp-sink dump",
      );
      assert.equal(msgs.length, 1, "one transaction");
      const rcpts = [...msgs[0].matchAll(/^X-Rcpt-Args: <([^>]*)>/gm)].map((x) => x[1]);
      assert.deepEqual(rcpts, to);
      assert.match(msgs[0], /^X-Helo-Args: skiff\.test$/m);
      // smtp-sink undoes the dot-stuffing: the line arrives as it was.
      assert.match(msgs[0], /\nSubject: lmtp\n\n\.dot\n/);
      assert.ok(id);
    } finally {
      await sink.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
