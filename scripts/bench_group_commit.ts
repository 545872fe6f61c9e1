/**
 * Group-commit benchmark: an in-process SMTP listener on a spool in DIR,
 * loaded by Postfix's smtp-source (20 sessions), once with coalesced
 * directory fsyncs (DirSyncer, the default) and once with one fsync per
 * message. Run it on a journaled file system to see the production gain:
 *
 *   truncate -s 300M /tmp/gc.img && mkfs.ext4 -q -F /tmp/gc.img
 *   mkdir -p /mnt/gc && mount -o loop /tmp/gc.img /mnt/gc
 *   ./scripts/deno run -A scripts/bench_group_commit.ts /mnt/gc 4000
 *   umount /mnt/gc
 *
 * Prints messages/s and directory fsyncs per message for both modes.
 */
import { parseConfig } from "../lib/config/load.ts";
import { startSmtpListener } from "../lib/listen/smtp_listener.ts";
import { DirSyncer } from "../lib/spool/durable.ts";
import { Spool } from "../lib/spool/spool.ts";

const [root = "/tmp", countText = "2000", sessions = "20"] = Deno.args;
const count = Number(countText);

async function one(coalesce: boolean): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: root, prefix: "gc-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "127.0.0.1:1"\n[log]\nlevel = "error"\n`,
    "bench",
    { cwd: dir },
  );
  const syncer = new DirSyncer({ coalesce });
  const spool = new Spool(cfg.spoolDir, { dirSyncer: syncer });
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
  console.log(
    `${coalesce ? "coalesced" : "per-message"}: ${queued} messages in ${secs.toFixed(2)} s = ` +
      `${(queued / secs).toFixed(0)} msg/s; dir fsyncs ${syncer.syncs} ` +
      `(${(syncer.syncs / Math.max(queued, 1)).toFixed(2)} per message)`,
  );
  await Deno.remove(dir, { recursive: true });
}

for (const coalesce of [false, true, false, true]) await one(coalesce);
