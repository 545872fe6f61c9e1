/**
 * The world-writable maildrop cannot stall the manager (issue 9, findings 2
 * and 3): FIFOs and devices under any name, a drop swapped for a FIFO while
 * the pickup looks at it, and a file past the size limit never block the
 * pickup, the directory watch, `skiff flush` or SIGTERM, and the manager
 * keeps serving SMTP and picking up good drops meanwhile. The scan interval
 * is an hour, so only the directory watch can notice a new drop.
 */
import assert from "node:assert/strict";
import {
  maildirFiles,
  runSkiff,
  SkiffServer as Server,
  sleep,
  submitMessage,
  waitFor,
} from "./harness.ts";
type SkiffServer = Server;
import { dropMessage } from "../lib/maildrop/drop.ts";
import { encodeDrop } from "../lib/maildrop/format.ts";
import { run } from "./run_cmd.ts";

const LIMIT = 20_000;

async function startServer(): Promise<{ server: SkiffServer; md: string }> {
  const server = await Server.start({
    queue: "retry_min = 1\nretry_max = 4\nscan_interval = 3600",
    toml: `[limits]\nmessage_size = ${LIMIT}\n`,
  });
  return { server, md: `${server.dir}/var/maildrop` };
}

const env = (subject: string) => ({
  envelope: { from: "", recipients: [{ address: "dave@localhost" }] },
  content: new TextEncoder().encode(`Subject: ${subject}\r\n\r\nbody\r\n`),
});

/** A name the pickup accepts (what dropMessage makes). */
function dropName(): string {
  const b = crypto.getRandomValues(new Uint8Array(12));
  return `${Date.now().toString(36)}.${
    [...b].map((x) => x.toString(16).padStart(2, "0")).join("")
  }`;
}

async function mkfifo(path: string): Promise<void> {
  const r = await run(["mkfifo", "-m", "0700", path]);
  assert.equal(r.code, 0, r.out);
}

/** Stops the server and fails when SIGTERM does not end it within a generous bound. */
async function stopsOnSigterm(server: SkiffServer): Promise<void> {
  const stopped = server.stop("SIGTERM").then(() => "stopped");
  const bound = sleep(20_000).then(() => "hung");
  const how = await Promise.race([stopped, bound]);
  if (how === "hung") await server.stop("SIGKILL");
  assert.equal(how, "stopped", "SIGTERM must stop the manager");
}

async function flushes(server: SkiffServer): Promise<void> {
  const r = await runSkiff(["--config", server.configPath, "flush"]);
  assert.equal(r.code, 0, `skiff flush: ${r.stdout}${r.stderr}`);
}

Deno.test({
  name:
    "FIFOs and devices in the maildrop block neither pickup, watch, flush nor SIGTERM; an oversized drop is refused unread",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { server, md } = await startServer();
    try {
      await mkfifo(`${md}/any name at all`);
      const fifoDrop = dropName();
      await mkfifo(`${md}/${fifoDrop}`);
      if (Deno.uid() === 0) {
        const r = await run(["mknod", "-m", "0700", `${md}/${dropName()}`, "c", "1", "3"]);
        assert.equal(r.code, 0, r.out);
      }
      // Past the limit by far: refused after reading at most limit + 64 KiB + 1 bytes.
      const big = `${md}/${dropName()}`;
      const huge = new Uint8Array(4 * 1024 * 1024).fill(0x61);
      await Deno.writeFile(big, encodeDrop(env("big").envelope, huge), { mode: 0o700 });
      await Deno.chmod(big, 0o700);

      const good = env("after the fifos");
      await dropMessage(md, good.envelope, good.content);
      await server.waitForLog(/received id=\S+ from=<[^>]*> size=\d+ nrcpt=1 client=maildrop/);
      await server.waitForLog(/delivered id=\S+ to=<dave@localhost>/);
      await server.waitForLog(/maildrop: file refused[^\n]*not a regular file \(a FIFO\)/);
      await server.waitForLog(/maildrop: file refused[^\n]*larger than/);
      assert.equal(await Deno.lstat(big).catch(() => null), null, "oversized drop removed");
      assert.equal(await Deno.lstat(`${md}/${fifoDrop}`).catch(() => null), null, "FIFO name gone");
      // The manager still serves SMTP, flush still works, SIGTERM still stops it.
      await submitMessage(server.port, { to: "dave@localhost", subject: "still serving" });
      await flushes(server);
      await stopsOnSigterm(server);
    } finally {
      await server.stop("SIGKILL").catch(() => {});
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "a drop swapped for a FIFO while the pickup runs never blocks it; good drops still arrive",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { server, md } = await startServer();
    try {
      const bytes = encodeDrop(env("swapped").envelope, env("swapped").content);
      // Bounded: 150 swaps, each a complete-looking drop replaced by a FIFO under the same name.
      const swapping = (async () => {
        for (let i = 0; i < 150; i++) {
          const name = `${md}/${dropName()}`;
          await Deno.writeFile(`${name}.tmp`, bytes, { mode: 0o700 });
          await Deno.chmod(`${name}.tmp`, 0o700);
          await Deno.rename(`${name}.tmp`, name);
          await mkfifo(`${name}.fifo`);
          await Deno.rename(`${name}.fifo`, name);
          if (i % 10 === 0) await sleep(20);
        }
      })();
      await Promise.all([swapping, flushes(server), flushes(server)]);
      const good = env("after the swaps");
      await dropMessage(md, good.envelope, good.content);
      await flushes(server);
      await waitFor(
        async () => {
          const files = await maildirFiles(`${server.dir}/mail/dave`);
          const texts = await Promise.all(files.map((f) => Deno.readTextFile(f)));
          return texts.some((t) => t.includes("Subject: after the swaps")) || null;
        },
        30_000,
        "the good drop after the swaps",
      );
      await submitMessage(server.port, { to: "dave@localhost", subject: "still serving" });
      await stopsOnSigterm(server);
    } finally {
      await server.stop("SIGKILL").catch(() => {});
      await server.cleanup();
    }
  },
});
