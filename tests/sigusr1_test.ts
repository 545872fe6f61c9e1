/**
 * SIGUSR1 must not open a V8 inspector (Deno 2.9.2+ opens one on
 * 127.0.0.1:9229, which would let any local user run code as skiff). With the
 * pinned Deno and skiff's own listener, the signal is logged and ignored.
 */
import assert from "node:assert/strict";
import { RawClient, SkiffServer, sleep } from "./harness.ts";

async function listening(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "SIGUSR1 to skiff serve opens no inspector on 9229 and does not stop it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    assert.equal(await listening(9229), false, "something already listens on 9229 before the test");
    const server = await SkiffServer.start();
    try {
      server.kill("SIGUSR1");
      await server.waitForLog(/signal ignored signal=SIGUSR1/);
      await sleep(500);
      assert.equal(await listening(9229), false, "an inspector is listening on 127.0.0.1:9229");
      // Still serving.
      const c = await RawClient.connect(server.port);
      const r = await c.reply();
      assert.ok(r?.[0].startsWith("220 "));
      c.close();
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});
