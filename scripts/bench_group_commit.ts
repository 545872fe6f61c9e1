/**
 * Group-commit benchmark: an in-process SMTP listener on a spool in DIR,
 * loaded by Postfix's smtp-source (20 sessions), in three modes, two rounds
 * each: fdatasync per file with one directory fsync per message; fdatasync
 * per file with coalesced directory fsyncs (DirSyncer); and the default,
 * syncfs group commit (one shared syncfs for a batch's data, one for its
 * renames). Run it on a journaled file system to see the production gain:
 *
 *   truncate -s 300M /tmp/gc.img && mkfs.ext4 -q -F /tmp/gc.img
 *   mkdir -p /mnt/gc && mount -o loop /tmp/gc.img /mnt/gc
 *   ./scripts/deno run -A scripts/bench_group_commit.ts /mnt/gc 4000
 *   umount /mnt/gc
 *
 * Prints messages/s and syncs per message for each mode.
 */
import { parseConfig } from "../lib/config/load.ts";
import { startSmtpListener } from "../lib/listen/smtp_listener.ts";
import { DirSyncer } from "../lib/spool/durable.ts";
import { Spool } from "../lib/spool/spool.ts";

const [root = "/tmp", countText = "2000", sessions = "20"] = Deno.args;
const count = Number(countText);

type Mode = "per-message" | "coalesced" | "syncfs";

async function one(mode: Mode): Promise<void> {
  const coalesce = mode !== "per-message";
  const dir = await Deno.makeTempDir({ dir: root, prefix: "gc-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n[log]\nlevel = "error"\n`,
    "bench",
    { cwd: dir },
  );
  const syncer = new DirSyncer({ coalesce });
  const spool = new Spool(cfg.spoolDir, {
    dirSyncer: syncer,
    sync: mode === "syncfs" ? "syncfs" : "fdatasync",
  });
  await spool.init();
  let queued = 0;
  const lc = { ...cfg.listeners[0], address: { kind: "tcp" as const, host: "127.0.0.1", port: 0 } };
  const listener = await startSmtpListener(lc, { config: cfg, spool, onQueued: () => queued++ });
  const port = listener.address.split(":").pop();
  const t0 = performance.now();
  const out = await new Deno.Command("/usr/sbin/smtp-source", {
    args: [
      "-s",
      sessions,
      "-m",
      String(count),
      "-l",
      "2048",
      "-f",
      "a@example.org",
      "-t",
      "b@localhost",
      `127.0.0.1:${port}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const secs = (performance.now() - t0) / 1000;
  await listener.close(1000);
  if (!out.success) console.error(new TextDecoder().decode(out.stderr));
  const s = spool.syncs;
  const n = Math.max(queued, 1);
  const syncs = s.mode === "syncfs"
    ? `syncfs ${s.data + s.dir} (${((s.data + s.dir) / n).toFixed(2)} per message)`
    : `fdatasync 1 per message; dir fsyncs ${syncer.syncs} (${
      (syncer.syncs / n).toFixed(2)
    } per message)`;
  console.log(
    `${mode}: ${queued} messages in ${secs.toFixed(2)} s = ${(queued / secs).toFixed(0)} msg/s; ` +
      syncs,
  );
  await Deno.remove(dir, { recursive: true });
}

const modes: Mode[] = ["per-message", "coalesced", "syncfs"];
for (let round = 0; round < 2; round++) for (const m of modes) await one(m);
