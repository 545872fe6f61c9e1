/**
 * A full spool disk (issue 9, finding 8), on a real size-limited tmpfs the
 * test mounts (root only; CI runs as root): MAIL is refused early with
 * 452 4.3.1 while a message of the size limit would not fit beside the
 * queue.min_free_bytes reserve (a small declared SIZE= still fits), the
 * condition is logged once when it starts and once when it clears, a
 * message queued before stays intact, and skiff accepts again by itself
 * once space is freed.
 */
import assert from "node:assert/strict";
import { statfsSync } from "node:fs";
import { SpaceMonitor } from "../lib/spool/space.ts";
import {
  maildirFiles,
  RawClient,
  runSkiff,
  SkiffServer,
  submitMessage,
  waitFor,
} from "./harness.ts";

const MiB = 1024 * 1024;
const isRoot = Deno.uid() === 0;

async function run(cmd: string[]): Promise<void> {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
}

/** One MAIL attempt in a fresh session; returns the MAIL reply line. */
async function tryMail(port: number, params = ""): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.line("EHLO full.test");
    await c.reply();
    await c.line(`MAIL FROM:<a@localhost>${params}`);
    const r = await c.reply();
    await c.line("QUIT");
    return r?.at(-1) ?? "(closed)";
  } finally {
    c.close();
  }
}

function count(log: string, re: RegExp): number {
  return log.split("\n").filter((l) => re.test(l)).length;
}

Deno.test({
  name:
    "full spool disk: 452 4.3.1 at MAIL, one log line per transition, nothing corrupted, recovers",
  ignore: !isRoot,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-diskfull-" });
    // The spool directory itself is the 10 MiB tmpfs; the Maildirs are not on it.
    const mnt = `${dir}/spool`;
    await Deno.mkdir(mnt);
    await run(["mount", "-t", "tmpfs", "-o", "size=10m", "tmpfs", mnt]);
    let server: SkiffServer | null = null;
    try {
      server = await SkiffServer.start({
        dir,
        queue: "retry_min = 1\nretry_max = 4\nmin_free_bytes = 2097152",
        toml: `[limits]\nmessage_size = ${MiB}\n`,
      });

      // Before: accepted, delivered intact.
      const body = "Subject: before\r\n\r\n" + "x".repeat(200_000) + "\r\n";
      await submitMessage(server.port, { to: "bob@localhost", data: body });
      const mailbox = `${dir}/mail/bob`;
      await waitFor(async () => (await maildirFiles(mailbox)).length === 1, 20_000, "delivery");

      // Fill the disk until ~3 MiB are free: below 2 MiB reserve + 1.5 x 1 MiB.
      const st = statfsSync(mnt);
      const free = Number(st.bavail) * Number(st.bsize);
      await Deno.writeFile(`${mnt}/filler`, new Uint8Array(free - 3 * MiB));
      const refused = await waitFor(
        async () => {
          const r = await tryMail(server!.port);
          return r.startsWith("452") ? r : null;
        },
        15_000,
        "452 at MAIL",
      );
      assert.equal(refused, "452 4.3.1 Insufficient system storage");
      // A small declared SIZE still fits beside the reserve; the limit's size does not.
      assert.match(await tryMail(server.port, " SIZE=100000"), /^250 /);
      assert.match(await tryMail(server.port, ` SIZE=${MiB}`), /^452 4\.3\.1 /);
      assert.match(await tryMail(server.port), /^452 4\.3\.1 /);
      assert.equal(count(server.log, /spool space low/), 1, server.log);

      // Space comes back: accepted again without a restart, logged once.
      await Deno.remove(`${mnt}/filler`);
      await waitFor(
        async () => (await tryMail(server!.port)).startsWith("250"),
        15_000,
        "250 at MAIL after space was freed",
      );
      await submitMessage(server.port, { to: "bob@localhost", data: body });
      await waitFor(async () => (await maildirFiles(mailbox)).length === 2, 20_000, "delivery");
      for (const f of await maildirFiles(mailbox)) {
        const text = await Deno.readTextFile(f);
        assert.ok(text.includes("x".repeat(200_000)), `${f} is intact`);
      }
      assert.equal(count(server.log, /spool space low/), 1, server.log);
      assert.equal(count(server.log, /spool space ok/), 1, server.log);
      const q = await runSkiff(["--config", server.configPath, "mailq"]);
      assert.equal(q.code, 0, q.stderr);
    } finally {
      await server?.stop();
      await run(["umount", mnt]).catch(() => run(["umount", "-l", mnt]));
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("SpaceMonitor: 1.5 x size plus the reserve must be free; statfs at most once a second", async () => {
  let free = 10 * MiB;
  let calls = 0;
  let now = 0;
  const space = new SpaceMonitor({
    dir: "/nonexistent",
    minFree: 2 * MiB,
    messageSize: MiB,
    available: () => (calls++, Promise.resolve(free)),
    now: () => now,
  });
  await space.refresh();
  assert.equal(space.low, false);
  assert.ok(space.fits(MiB));
  assert.ok(space.fits(5 * MiB)); // 2 + 7.5 <= 10
  assert.ok(!space.fits(6 * MiB)); // 2 + 9 > 10
  free = 3 * MiB; // 2 + 1.5 > 3: low
  for (let i = 0; i < 100; i++) space.fits(MiB); // cached: no statfs per command
  assert.equal(calls, 1);
  now = 1001;
  assert.ok(space.fits(MiB), "the stale figure answers; a refresh starts for the next caller");
  await space.refresh();
  assert.equal(space.low, true);
  assert.ok(!space.fits(MiB));
  assert.ok(space.fits(600 * 1024), "a small declared SIZE still fits");
  free = 20 * MiB;
  await space.refresh();
  assert.equal(space.low, false);
});
