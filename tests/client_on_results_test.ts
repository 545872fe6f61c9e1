/**
 * OutgoingMessage.onResults: the SMTP client reports the recipients a reply
 * after the content settles the moment it reads that reply, before send()
 * returns (and so before any QUIT or cache work), which is what lets the
 * queue journal a delivery the peer already holds without delay.
 */
import assert from "node:assert/strict";
import { openSession, type OutgoingMessage } from "../lib/smtp/client.ts";
import { TOKEN_HEADER, TokenSink } from "../scripts/token_sink.ts";

const encoder = new TextEncoder();

Deno.test({
  name: "onResults reports the data reply's recipients before send() returns",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-on-results-" });
    const sink = await TokenSink.start({ file: `${dir}/tokens` });
    try {
      const events: string[] = [];
      const content = encoder.encode(`Subject: x\r\n${TOKEN_HEADER}: onr-1\r\n\r\nbody\r\n`);
      const msg: OutgoingMessage = {
        from: "a@example.com",
        recipients: ["b@example.net", "c@example.net"],
        size: content.length,
        content: () => Promise.resolve(ReadableStream.from([content])),
        onResults: (settled, relay) => {
          events.push(
            `onResults ${relay} ${
              settled.map((s) => `${s.index}:${s.result.outcome}:${s.result.code}`).join(",")
            }`,
          );
        },
      };
      const session = await openSession({
        host: "127.0.0.1",
        port: sink.port,
        helo: "client.test",
        connectTimeoutMs: 5000,
        replyTimeoutMs: 5000,
      });
      const res = await session.send(msg);
      events.push("sent");
      await session.quit();
      assert.deepEqual(events, [
        `onResults 127.0.0.1[127.0.0.1]:${sink.port} 0:delivered:250,1:delivered:250`,
        "sent",
      ]);
      assert.deepEqual(res.recipients.map((r) => r.outcome), ["delivered", "delivered"]);
      assert.deepEqual(await sink.tokens(), ["onr-1"]);
    } finally {
      await sink.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
