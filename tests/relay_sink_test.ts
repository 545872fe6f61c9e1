/**
 * The SMTP client (sendMessage) against a real peer: Postfix's smtp-sink, which counts what
 * it receives and dumps each transaction (dot-unstuffed) to a file. Twenty
 * messages, sent concurrently, must all be delivered and all be in the dump.
 */
import assert from "node:assert/strict";
import { type OutgoingMessage, sendMessage } from "../lib/smtp/client.ts";
import { freePort } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { waitListening } from "./run_cmd.ts";

const COUNT = 20;

function message(n: number): OutgoingMessage {
  const bytes = new TextEncoder().encode(
    `From: sender@example.test\r\nTo: rcpt${n}@example.test\r\n` +
      `Message-Id: <relay-${n}@skiff.test>\r\nSubject: relay test ${n}\r\n\r\n` +
      `.dot line ${n}\r\nbody ${n}\r\n`,
  );
  return {
    from: "sender@example.test",
    recipients: [`rcpt${n}@example.test`, `other${n}@example.test`],
    size: bytes.length,
    content: () => Promise.resolve(ReadableStream.from([bytes])),
  };
}

peerTest("sendMessage delivers 20 messages to smtp-sink", [PEERS.smtpSink], async () => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-sink-" });
  // smtp-sink drops root privileges to nobody, who must be able to write the dump.
  await Deno.chmod(dir, 0o777);
  const dump = `${dir}/dump`;
  const port = await freePort();
  const args = ["-c", "-D", dump, `127.0.0.1:${port}`, "100"];
  if (Deno.uid() === 0) args.unshift("-u", "nobody");
  const sink = new Deno.Command(PEERS.smtpSink.bin, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let counters = "";
  try {
    await waitListening(port, 5000);
    const opts = {
      host: "127.0.0.1",
      port,
      helo: "skiff.test",
      connectTimeoutMs: 5000,
      replyTimeoutMs: 10_000,
    };
    const results = await Promise.all(
      Array.from({ length: COUNT }, (_, n) => sendMessage(opts, message(n))),
    );
    for (const [n, res] of results.entries()) {
      assert.equal(res.relay, `127.0.0.1[127.0.0.1]:${port}`);
      assert.deepEqual(
        res.recipients.map((r) => [r.address, r.outcome, r.code, r.dsn]),
        [
          [`rcpt${n}@example.test`, "delivered", 250, "2.0.0"],
          [`other${n}@example.test`, "delivered", 250, "2.0.0"],
        ],
      );
    }

    // The dump is written as each "." arrives; read until all are there.
    let text = "";
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      text = await Deno.readTextFile(dump).catch(() => "");
      if (text.split("X-Mail-Args:").length - 1 >= COUNT) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(text.split("X-Mail-Args: <sender@example.test>").length - 1, COUNT);
    for (let n = 0; n < COUNT; n++) {
      assert.ok(text.includes(`X-Rcpt-Args: <rcpt${n}@example.test>`), `rcpt ${n}`);
      assert.ok(text.includes(`X-Rcpt-Args: <other${n}@example.test>`), `other ${n}`);
      assert.ok(text.includes(`Message-Id: <relay-${n}@skiff.test>`), `message ${n}`);
      // Stuffed by us, unstuffed by the sink: the line arrives as written.
      assert.ok(text.includes(`\n.dot line ${n}\n`), `dot line ${n}`);
    }
  } finally {
    sink.kill("SIGTERM");
    const out = await sink.output();
    // smtp-sink -c prints "sess=N quit=N mesg=N" counters, separated by CR.
    counters = new TextDecoder().decode(out.stdout).split("\r").filter(Boolean).at(-1) ?? "";
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(Number(/mesg=(\d+)/.exec(counters)?.[1]), COUNT, `smtp-sink counters: ${counters}`);
});
