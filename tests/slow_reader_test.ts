/**
 * A client that pipelines commands and never reads the replies must not
 * hold its connection slot (issue 9, finding 4): once the replies it does
 * not take pass limits.output_buffer, or it has not drained them within
 * command_timeout, skiff drops the connection and logs "slow reader".
 * A real TCP socket that stops reading after the greeting; no mocks.
 */
import assert from "node:assert/strict";
import { SkiffServer } from "./harness.ts";

const HELP_BURST = new TextEncoder().encode("HELP\r\n".repeat(10_000)); // 60 KB per write
const MAX_SENT = 8 * 1024 * 1024; // bounded: the client stops after 8 MB whatever happens

Deno.test("a client that never reads its replies is dropped after command_timeout and logged", async () => {
  const server = await SkiffServer.start({
    toml: "[limits]\ncommand_timeout = 2\nsession_timeout = 600\noutput_buffer = 65536\n",
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    // Read the greeting only (a client that talks first is refused with 554), then never again.
    const greeting = new Uint8Array(512);
    assert.ok((await conn.read(greeting) ?? 0) > 0);
    let sent = 0;
    let writeError = "";
    const writer = (async () => {
      await conn.write(new TextEncoder().encode("EHLO slow.test\r\n"));
      while (sent < MAX_SENT) {
        await conn.write(HELP_BURST);
        sent += HELP_BURST.length;
      }
    })().catch((err) => writeError = String(err));
    // The replies (~70 bytes per HELP) fill the kernel buffers; skiff must give up on us.
    const m = await server.waitForLog(/slow reader[^\n]*/, 60_000);
    assert.match(m[0], /client=127\.0\.0\.1/);
    assert.match(m[0], /reason="?(write timeout|output bound)/);
    // The connection is gone: reading now reaches the end (or a reset) after what was in flight.
    let total = 0;
    const buf = new Uint8Array(256 * 1024);
    let ended = false;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && total < 64 * 1024 * 1024) {
      try {
        const n = await conn.read(buf);
        if (n === null) {
          ended = true;
          break;
        }
        total += n;
      } catch {
        ended = true; // ECONNRESET: skiff dropped the socket with our unread input
        break;
      }
    }
    assert.ok(ended, `connection still open after reading ${total} bytes`);
    await writer;
    assert.ok(sent <= MAX_SENT, `sent ${sent}, write error ${writeError}`);
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
    await server.stop();
    await server.cleanup();
  }
});
