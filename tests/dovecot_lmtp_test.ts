/**
 * Delivery into Dovecot's LMTP server (Debian dovecot-lmtpd), driven through
 * the QueueManager: an `lmtp` route over TCP and over a unix socket (several
 * recipients, one reply each after the data), and a `program` route running
 * Dovecot's `lmtp` standalone on stdin/stdout — started once by the queue
 * manager, kept running for the next messages, restarted after it died.
 * The Maildir files Dovecot wrote are counted and read back.
 */
import assert from "node:assert/strict";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import { maildirFiles, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, testConfig } from "./delivery_peers.ts";
import { DOVECOT, Dovecot } from "./dovecot.ts";

const NEEDS = [PEERS.dovecotLmtp, { bin: DOVECOT, pkg: "dovecot-core" }];

async function bodies(dc: Dovecot, user: string): Promise<string[]> {
  return await Promise.all((await dc.messages(user)).map((f) => Deno.readTextFile(f)));
}

peerTest("Dovecot LMTP over TCP and a unix socket: per-recipient results", NEEDS, async () => {
  const dc = await Dovecot.start({ users: ["bob", "carol", "dave", "erin", "frank", "alice"] });
  const dir = await Deno.makeTempDir({ prefix: "skiff-dclmtp-" });
  try {
    const cfg = testConfig(
      dir,
      `[[route]]\ndomain = "tcp.test"\ntype = "lmtp"\nhost = "127.0.0.1:${dc.port}"\n` +
        `[[route]]\ndomain = "sock.test"\ntype = "lmtp"\nsocket = "${dc.socket}"\n`,
    );
    const spool = new Spool(cfg.spoolDir);
    await spool.init();
    const a = await spoolMessage(
      spool,
      {
        from: "alice@localhost",
        to: ["bob@tcp.test", "nosuch@tcp.test", "carol@tcp.test", "dave@tcp.test"],
      },
      "Subject: over tcp\r\n\r\n.leading dot\r\nline two\r\n",
    );
    const b = await spoolMessage(
      spool,
      { from: "alice@localhost", to: ["erin@sock.test", "frank@sock.test"] },
      "Subject: over the socket\r\n\r\nhello\r\n",
    );
    const m = new QueueManager({ config: cfg, spool });
    await m.scan();
    await m.idle();
    await m.stop();
    assert.deepEqual(await spool.list(), [], "both messages finished and removed");
    // Dovecot refused the unknown user at RCPT: one bounce to alice, in the local Maildir.
    const bounces = await maildirFiles(`${dir}/mail/alice`);
    assert.equal(bounces.length, 1);
    const bounce = await Deno.readTextFile(bounces[0]);
    assert.match(
      bounce,
      /Final-Recipient: rfc822; nosuch@tcp\.test\nAction: failed\nStatus: 5\.1\.1/,
    );
    assert.match(bounce, /Diagnostic-Code: smtp; 550 5\.1\.1 /);
    assert.match(bounce, /Remote-MTA: dns; /);
    assert.equal((await dc.messages("nosuch")).length, 0);
    for (const u of ["bob", "carol", "dave"]) {
      const got = await bodies(dc, u);
      assert.equal(got.length, 1, `one message for ${u}`);
      assert.match(got[0], /^Return-Path: <alice@localhost>$/m);
      assert.match(got[0], /^Subject: over tcp$/m);
      // Dot-stuffed on the wire, unstuffed by Dovecot.
      assert.match(got[0], /\n\n\.leading dot\nline two\n$/);
    }
    for (const u of ["erin", "frank"]) {
      const got = await bodies(dc, u);
      assert.equal(got.length, 1, `one message for ${u}`);
      assert.match(got[0], /^Subject: over the socket$/m);
    }
    const log = await dc.log();
    assert.equal(log.match(/saved mail to INBOX/g)?.length, 5, log);
    assert.ok(a && b);
  } finally {
    await dc.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

peerTest(
  "Dovecot's lmtp as a program destination: started once, kept running, restarted after death",
  NEEDS,
  async () => {
    const dc = await Dovecot.start();
    const dir = await Deno.makeTempDir({ prefix: "skiff-dcprog-" });
    try {
      const cfg = testConfig(
        dir,
        `[delivery]\ncache_idle = 60\n[[route]]\ndomain = "prog.test"\ntype = "program"\n` +
          `command = ${JSON.stringify(dc.lmtpCommand)}\n` +
          `[[route]]\ndomain = "asnobody.test"\ntype = "program"\nuser = "nobody"\n` +
          `command = ${JSON.stringify(dc.lmtpCommand)}\n`,
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const m = new QueueManager({ config: cfg, spool });
      const pool = m.programPool;
      try {
        // Three messages one after another, then a burst of five: one program serves them all.
        for (let i = 0; i < 3; i++) {
          const to = i === 0 ? ["gina@prog.test", "hank@prog.test"] : ["gina@prog.test"];
          const id = await spoolMessage(
            spool,
            { from: "alice@localhost", to },
            `Subject: m${i}\r\n\r\nx\r\n`,
          );
          m.enqueue(id);
          await m.idle();
          assert.ok(!(await spool.list()).includes(id), `message ${i} delivered`);
        }
        for (let i = 0; i < 5; i++) {
          await spoolMessage(spool, { from: "alice@localhost", to: [`ivan@prog.test`] });
        }
        await m.scan();
        await m.idle();
        assert.deepEqual(await spool.list(), []);
        assert.equal(pool.starts(dc.lmtpCommand, null), 1, "one program for eight messages");
        const pid = pool.pid(dc.lmtpCommand, null);
        assert.ok(pid !== null, "the program is still running between messages");
        assert.equal((await dc.messages("gina")).length, 3);
        assert.equal((await dc.messages("hank")).length, 1);
        assert.equal((await dc.messages("ivan")).length, 5);

        // The program dies while idle: the next message starts a new one and is delivered.
        Deno.kill(pid!, "SIGKILL");
        await waitFor(() => pool.pid(dc.lmtpCommand, null) === null, 10_000, "program exit");
        const id = await spoolMessage(spool, { from: "alice@localhost", to: ["gina@prog.test"] });
        m.enqueue(id);
        await m.idle();
        assert.deepEqual(await spool.list(), []);
        assert.equal(pool.starts(dc.lmtpCommand, null), 2, "restarted once");
        assert.equal((await dc.messages("gina")).length, 4);

        // A route with user = "nobody": its own program, started as nobody's uid and gid (when root).
        const id2 = await spoolMessage(spool, {
          from: "alice@localhost",
          to: ["kim@asnobody.test"],
        });
        m.enqueue(id2);
        await m.idle();
        assert.deepEqual(await spool.list(), []);
        assert.equal((await dc.messages("kim")).length, 1);
        const nobody = { name: "nobody", uid: 65534, gid: 65534 };
        const npid = pool.pid(dc.lmtpCommand, nobody);
        assert.ok(npid !== null && npid !== pool.pid(dc.lmtpCommand, null), "a second program");
        if (Deno.uid() === 0) {
          const status = await Deno.readTextFile(`/proc/${npid}/status`);
          assert.match(status, /^Uid:\t65534\t65534\t65534\t65534$/m);
          assert.match(status, /^Gid:\t65534\t65534\t65534\t65534$/m);
        }
      } finally {
        await m.stop();
      }
      // stop() ends the program.
      assert.equal(pool.pid(dc.lmtpCommand, null), null);
    } finally {
      await dc.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);
