/**
 * SIGUSR1 must not open a V8 inspector: Deno 2.9.2 and later start one on
 * 127.0.0.1:9229, which would let any local user run code as skiff. skiff
 * blocks the signal in every thread (lib/sys/sigusr1.ts), so it stays
 * pending, harmless: nothing listens on 9229 and the server keeps serving.
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

/** The SigBlk/ShdPnd masks of every thread of a process. */
function threadMasks(pid: number): { blocked: bigint; pending: bigint }[] {
  const out: { blocked: bigint; pending: bigint }[] = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    const status = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`);
    const field = (name: string) =>
      BigInt("0x" + (status.match(new RegExp(`^${name}:\\s*([0-9a-f]+)`, "m"))?.[1] ?? "0"));
    out.push({ blocked: field("SigBlk"), pending: field("ShdPnd") });
  }
  return out;
}

const SIGUSR1 = 1n << 9n;

Deno.test({
  name: "SIGUSR1 to skiff serve opens no inspector on 9229 and does not stop it",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    assert.equal(await listening(9229), false, "something already listens on 9229 before the test");
    const server = await SkiffServer.start();
    try {
      // Past Deno's 500 ms grace period, when its SIGUSR1 handler would exist.
      await sleep(800);
      const threads = threadMasks(server.pid);
      assert.ok(threads.length > 1, "a multi-threaded runtime");
      for (const t of threads) assert.ok(t.blocked & SIGUSR1, "SIGUSR1 blocked in every thread");
      server.kill("SIGUSR1");
      await sleep(800);
      assert.equal(await listening(9229), false, "an inspector is listening on 127.0.0.1:9229");
      assert.ok(
        threadMasks(server.pid).some((t) => t.pending & SIGUSR1),
        "the signal stays pending",
      );
      assert.doesNotMatch(server.log, /Debugger listening/);
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
