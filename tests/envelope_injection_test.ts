/**
 * Regression tests for issue 9, finding 1: a maildrop file whose NOTIFY
 * held "\r\nRSET\r\nMAIL FROM:...\r\nRCPT TO:..." made the relayhost see a
 * forged transaction. Against a real receiving server (Postfix's smtp-sink,
 * which offers DSN and dumps each transaction with its MAIL and RCPT
 * arguments): the injected maildrop file is refused at pickup with a log
 * line naming the field, a hand-edited spool file is quarantined, and the
 * SMTP client on its own refuses to send such a parameter. A good message
 * goes through the same path each time, so the tests cannot pass by
 * delivering nothing.
 */
import assert from "node:assert/strict";
import { sendMessage } from "../lib/smtp/client.ts";
import { type Envelope, reseal, Spool } from "../lib/spool/mod.ts";
import { SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

/** The exact injection from the issue. */
const INJECTED =
  "SUCCESS\r\nRSET\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<injected@example.net>";
const enc = new TextEncoder();

/** True when the sink saw anything of the forged transaction. */
function forged(messages: string[]): boolean {
  return messages.some((m) => /ceo@bank\.example|injected@example\.net|^RSET/m.test(m));
}

/** A complete maildrop file written as the shim would, but with any envelope JSON. */
async function plantDrop(dir: string, envelope: unknown, body: string): Promise<string> {
  const name = `${Date.now().toString(36)}.${
    [...crypto.getRandomValues(new Uint8Array(12))].map((x) => x.toString(16).padStart(2, "0"))
      .join("")
  }`;
  await Deno.writeFile(
    `${dir}/${name}`,
    enc.encode(`skiff-maildrop 1\n${JSON.stringify(envelope)}\n${body}`),
    { mode: 0o600 },
  );
  await Deno.chmod(`${dir}/${name}`, 0o700); // complete
  return name;
}

function serverToml(sinkPort: number, dir: string): string {
  return `[relay]\nrelayhost = "127.0.0.1:${sinkPort}"\n[sendmail]\nmaildrop_dir = "${dir}/maildrop"\n`;
}

peerTest(
  "maildrop: a NOTIFY holding CRLF and commands is refused at pickup; the relay sees no forged transaction",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start();
    const dir = await Deno.makeTempDir({ prefix: "skiff-inject-" });
    await Deno.mkdir(`${dir}/maildrop`, { mode: 0o1733 });
    let server: SkiffServer | null = null;
    try {
      const bad = await plantDrop(`${dir}/maildrop`, {
        from: "alice@example.org",
        recipients: [{ address: "bob@example.net", notify: [INJECTED] }],
      }, "Subject: evil\r\n\r\ninjected body\r\n");
      await plantDrop(`${dir}/maildrop`, {
        from: "alice@example.org",
        recipients: [{ address: "carol@example.net", notify: ["SUCCESS", "FAILURE"] }],
      }, "Subject: good\r\n\r\ngood-token-1\r\n");
      server = await SkiffServer.start({ dir, toml: serverToml(sink.port, dir) });
      const good = await waitFor(
        async () => {
          const m = await sink.messages();
          return m.some((x) => x.includes("good-token-1")) && m;
        },
        20_000,
        "the good drop at the sink",
      );
      await server.waitForLog(/maildrop: file refused/);
      assert.match(server.log, new RegExp(`file refused.*${bad}.*recipient 1 NOTIFY`));
      assert.ok(!forged(await sink.messages()), `forged transaction at the sink:\n${good}`);
      assert.ok(!(await sink.messages()).some((m) => m.includes("injected body")));
      assert.match(good.join("\n"), /^X-Rcpt-Args: <carol@example\.net> NOTIFY=SUCCESS,FAILURE$/m);
      // Refused files do not stay to be refused again on every scan.
      assert.deepEqual([...Deno.readDirSync(`${dir}/maildrop`)], []);
    } finally {
      await server?.stop();
      await sink.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

/** A message in the spool under dir, as the SMTP server would write it. */
async function spoolOne(spool: Spool, to: string, body: string): Promise<string> {
  const w = await spool.begin();
  const bytes = enc.encode(body);
  await w.write(bytes);
  const env: Envelope = {
    id: w.id,
    from: "alice@example.org",
    recipients: [{ address: to, notify: ["SUCCESS"] }],
    received: Date.now(),
    client: { address: "192.0.2.1", helo: "client.example" },
    protocol: "ESMTP",
    size: bytes.length,
  };
  await w.commit(env);
  return w.id;
}

peerTest(
  "spool: a hand-edited envelope with the injected NOTIFY is quarantined, never delivered, not lost",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start();
    const dir = await Deno.makeTempDir({ prefix: "skiff-inject-" });
    let server: SkiffServer | null = null;
    try {
      const spool = new Spool(`${dir}/spool`);
      await spool.init();
      const bad = await spoolOne(
        spool,
        "bob@example.net",
        "Subject: evil\r\n\r\ninjected body\r\n",
      );
      await spoolOne(spool, "carol@example.net", "Subject: good\r\n\r\ngood-token-2\r\n");
      const path = spool.path(bad);
      const text = await Deno.readTextFile(path);
      const edited = text.replace('"notify":["SUCCESS"]', `"notify":${JSON.stringify([INJECTED])}`);
      assert.notEqual(edited, text);
      // Sealed again, as a tool editing the file would: the seal alone would stop it first.
      await Deno.writeFile(path, reseal(new TextEncoder().encode(edited)));

      server = await SkiffServer.start({ dir, toml: serverToml(sink.port, dir) });
      await waitFor(
        async () => {
          const m = await sink.messages();
          return m.some((x) => x.includes("good-token-2"));
        },
        20_000,
        "the good message at the sink",
      );
      await server.waitForLog(/queue file quarantined/);
      assert.match(server.log, new RegExp(`queue file quarantined.*${bad}.*recipient 1 NOTIFY`));
      assert.ok(!forged(await sink.messages()), "forged transaction at the sink");
      assert.ok(!(await sink.messages()).some((m) => m.includes("injected body")));
      // Not lost: byte for byte in quarantine/, and gone from the queue.
      assert.equal(
        await Deno.readTextFile(`${dir}/spool/quarantine/${bad}`),
        new TextDecoder().decode(reseal(new TextEncoder().encode(edited))),
      );
      assert.ok(!(await spool.list()).includes(bad));
    } finally {
      await server?.stop();
      await sink.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

peerTest(
  "client: a parameter or address holding CR/LF is never sent; that recipient fails, others go",
  [PEERS.smtpSink],
  async () => {
    const sink = await Sink.start();
    try {
      const body = enc.encode("Subject: t\r\n\r\nclient-token\r\n");
      const target = {
        host: "127.0.0.1",
        port: sink.port,
        helo: "skiff.test",
        connectTimeoutMs: 5000,
        replyTimeoutMs: 10_000,
      };
      const msg = {
        from: "alice@example.org",
        recipients: ["good@example.net", "bad@example.net"],
        size: body.length,
        content: () => Promise.resolve(ReadableStream.from([body])),
        rcptParams: [{ notify: ["SUCCESS"] }, { notify: [INJECTED] }],
      };
      const res = await sendMessage(target, msg);
      assert.deepEqual(res.recipients.map((r) => [r.address, r.outcome, r.dsn]), [
        ["good@example.net", "delivered", "2.0.0"],
        ["bad@example.net", "failed", "5.5.4"],
      ]);
      assert.match(res.recipients[1].text, /^Invalid NOTIFY "SUCCESS\\r\\nRSET\\r\\nMAIL FROM:/);
      // A RET or sender with a line end refuses the whole transaction before MAIL is sent.
      const badRet = await sendMessage(target, {
        ...msg,
        rcptParams: undefined,
        ret: "FULL\r\nRSET" as "FULL",
      });
      assert.deepEqual(badRet.recipients.map((r) => r.outcome), ["failed", "failed"]);
      assert.match(
        badRet.recipients[0].text,
        /Refused to send the ESMTP parameter "RET=FULL\\r\\nRSET"/,
      );
      const badFrom = await sendMessage(target, {
        ...msg,
        rcptParams: undefined,
        from: "a@b.example>\r\nRSET",
      });
      assert.deepEqual(badFrom.recipients.map((r) => r.dsn), ["5.1.7", "5.1.7"]);
      const dumped = await waitFor(
        async () => {
          const m = await sink.messages();
          return m.length > 0 && m;
        },
        10_000,
        "the sink's dump",
      );
      assert.equal(dumped.length, 1);
      assert.match(dumped[0], /^X-Rcpt-Args: <good@example\.net> NOTIFY=SUCCESS$/m);
      assert.ok(!forged(dumped));
    } finally {
      await sink.stop();
    }
  },
);
