/**
 * NOTIFY=SUCCESS produces a success notice (issue 9, finding 7; RFC 3461
 * §5.2.2): "delivered" for delivery to a final destination here, "relayed"
 * for a hand-over to a server without DSN, and nothing from skiff when the
 * next hop offers DSN (the request went on with the message). Delay
 * warnings give durations in the largest sensible unit.
 */
import assert from "node:assert/strict";
import { parseConfig } from "../lib/config/load.ts";
import { buildReport, formatDuration } from "../lib/queue/bounce.ts";
import type { MessageState } from "../lib/spool/records.ts";
import { maildirFiles, RawClient, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { Sink } from "./sink.ts";

Deno.test("durations are printed in the largest sensible unit", () => {
  const table: [number, string][] = [
    [0, "0 seconds"],
    [1000, "1 second"],
    [45_000, "45 seconds"],
    [60_000, "1 minute"],
    [90_000, "1.5 minutes"],
    [600_000, "10 minutes"],
    [3600_000, "1 hour"],
    [5400_000, "1.5 hours"],
    [86400_000, "1 day"],
    [432000_000, "5 days"],
    [-5, "0 seconds"],
  ];
  for (const [ms, text] of table) assert.equal(formatDuration(ms), text, String(ms));
});

Deno.test("a delay warning with short settings no longer says 0 hours and 0 days", () => {
  const cfg = parseConfig("[queue]\nlifetime = 600\n", "t", { cwd: "/tmp" });
  const state: MessageState = {
    envelope: {
      id: "Q1",
      from: "a@localhost",
      recipients: [{ address: "b@example.net" }],
      received: 1_000_000,
      client: { address: "127.0.0.1", helo: "t" },
      protocol: "ESMTP",
      size: 10,
    },
    recipients: [{
      index: 0,
      address: "b@example.net",
      status: "deferred",
      attempts: 1,
      nextAttempt: 1_200_000,
      history: [],
    }],
    done: false,
    nextAttempt: 1_200_000,
  };
  const text = new TextDecoder().decode(buildReport({
    cfg,
    state,
    recipients: state.recipients,
    action: "delayed",
    original: new TextEncoder().encode("Subject: x\r\n\r\nbody\r\n"),
    id: "R1",
    now: 1_090_000,
    to: "a@localhost",
  }));
  assert.match(
    text,
    /could not be delivered for 1\.5 minutes\. It will be retried until it is 10 minutes old\./,
  );
  assert.doesNotMatch(text, /0 hours|0 days/);
});

/** Sends one message with NOTIFY on the recipient; returns its queue id. */
async function send(port: number, to: string, notify: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const step = async (line: string | null, code: string) => {
      if (line !== null) await c.line(line);
      const r = await c.reply();
      assert.ok(r?.at(-1)?.startsWith(code), `${line}: ${r?.join(" | ")}`);
      return r!.at(-1)!;
    };
    await step(null, "220");
    await step("EHLO dsn.test", "250");
    await step("MAIL FROM:<alice@localhost> ENVID=env-42", "250");
    await step(`RCPT TO:<${to}> NOTIFY=${notify}`, "250");
    await step("DATA", "354");
    const final = await step("Subject: please confirm\r\n\r\nbody line\r\n.", "250");
    await c.line("QUIT");
    const id = /queued as (\S+)/.exec(final)?.[1];
    assert.ok(id, final);
    return id;
  } finally {
    c.close();
  }
}

/** The DSNs in alice's Maildir. */
async function dsns(dir: string): Promise<string[]> {
  const files = await maildirFiles(`${dir}/mail/alice`);
  return await Promise.all(files.map((f) => Deno.readTextFile(f)));
}

Deno.test("NOTIFY=SUCCESS on a local delivery: the sender gets one 'delivered' notice", async () => {
  const server = await SkiffServer.start();
  try {
    await send(server.port, "bob@localhost", "SUCCESS");
    await waitFor(async () => (await dsns(server.dir)).length === 1, 20_000, "the success DSN");
    const [dsn] = await dsns(server.dir);
    assert.match(dsn, /Subject: Successful Mail Delivery Report/);
    assert.match(dsn, /Final-Recipient: rfc822; bob@localhost/);
    assert.match(dsn, /Action: delivered/);
    assert.match(dsn, /Status: 2\.0\.0/);
    assert.match(dsn, /Original-Envelope-Id: env-42/);
    // Headers only: RET is about failures (RFC 3461 §4.3).
    assert.match(dsn, /Content-Type: text\/rfc822-headers/);
    assert.doesNotMatch(dsn, /body line/);
    assert.equal((await maildirFiles(`${server.dir}/mail/bob`)).length, 1);
    // No notice without NOTIFY=SUCCESS: the message is removed with none sent.
    const id = await send(server.port, "carol@localhost", "FAILURE");
    await server.waitForLog(new RegExp(`removed id=${id}`), 20_000);
    assert.doesNotMatch(server.log, new RegExp(`success notice id=${id}`));
    assert.equal((await dsns(server.dir)).length, 1);
    assert.equal([...server.log.matchAll(/success notice/g)].length, 1, server.log);
  } finally {
    await server.stop();
    await server.cleanup();
  }
});

peerTest(
  "NOTIFY=SUCCESS relayed: 'relayed' to a next hop without DSN, nothing when it offers DSN",
  [
    PEERS.smtpSink,
  ],
  async () => {
    const plain = await Sink.start({ noDsn: true });
    const withDsn = await Sink.start();
    const route = (domain: string, port: number) =>
      `[[route]]\ndomain = "${domain}"\ntype = "smtp"\nhost = "127.0.0.1:${port}"\ntls = "none"\n`;
    const server = await SkiffServer.start({
      toml: route("nodsn.test", plain.port) + route("dsn.test", withDsn.port),
    });
    try {
      await send(server.port, "x@nodsn.test", "SUCCESS,FAILURE");
      await waitFor(async () => (await dsns(server.dir)).length === 1, 20_000, "the relayed DSN");
      const [dsn] = await dsns(server.dir);
      assert.match(dsn, /Final-Recipient: rfc822; x@nodsn\.test/);
      assert.match(dsn, /Action: relayed/);
      assert.match(dsn, /Remote-MTA: dns; 127\.0\.0\.1/);

      const id = await send(server.port, "y@dsn.test", "SUCCESS");
      // Removed only after its notices were decided: none for a DSN-capable next hop.
      await server.waitForLog(new RegExp(`removed id=${id}`), 20_000);
      assert.equal((await withDsn.messages()).length, 1);
      assert.doesNotMatch(server.log, new RegExp(`success notice id=${id}`));
      assert.equal((await dsns(server.dir)).length, 1, "no notice for a DSN-capable next hop");
    } finally {
      await server.stop();
      await server.cleanup();
      await plain.stop();
      await withDsn.stop();
    }
  },
);
