/**
 * `skiff status`: queue counts by state, the oldest message and, from a
 * running manager, its pid, uptime and open connections. The spool half is
 * read from disk, so the same figures come with or without a manager.
 */
import type { Config } from "../config/types.ts";
import { listQueue, NO_SCHEDULER, type QueueHooks } from "./queue_ops.ts";

/** Queue figures read from the spool. */
export interface SpoolStatus {
  queue: { active: number; deferred: number; incoming: number; hold: number; total: number };
  /** Files waiting in the maildrop; null when this user cannot read it. */
  maildrop: number | null;
  oldest: { queue_id: string; arrival_time: number; age_seconds: number } | null;
}

/** Counts messages by state and finds the oldest. */
export async function spoolStatus(
  cfg: Config,
  hooks: QueueHooks = NO_SCHEDULER,
): Promise<SpoolStatus> {
  const entries = await listQueue(cfg.spoolDir, hooks);
  const queue = { active: 0, deferred: 0, incoming: 0, hold: 0, total: entries.length };
  for (const e of entries) queue[e.queue_name]++;
  const first = entries[0];
  return {
    queue,
    maildrop: await countMaildrop(cfg),
    oldest: first
      ? {
        queue_id: first.queue_id,
        arrival_time: first.arrival_time,
        age_seconds: Math.max(0, Math.floor(Date.now() / 1000) - first.arrival_time),
      }
      : null,
  };
}

/** Files waiting in the maildrop; null when this user cannot read it. */
export async function countMaildrop(cfg: Config): Promise<number | null> {
  let n = 0;
  try {
    for await (const e of Deno.readDir(cfg.sendmail.maildropDir)) if (e.isFile) n++;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    return null;
  }
  return n;
}

/** Human-readable lines for `skiff status`. */
export function formatStatus(s: Record<string, unknown> & SpoolStatus): string {
  const lines: string[] = [];
  if (typeof s.pid === "number") {
    const uid = typeof s.uid === "number" ? `, uid ${s.uid}` : "";
    lines.push(
      `manager: running, pid ${s.pid}${uid}, version ${s.version}, up ${s.uptime_seconds} s`,
      `connections: ${s.connections ?? "unknown"}`,
    );
  } else {
    lines.push("manager: not running");
  }
  const q = s.queue;
  lines.push(
    `queue: ${q.total} message(s): ${q.active} active, ${q.deferred} deferred, ` +
      `${q.incoming} incoming, ${q.hold} on hold`,
    `maildrop: ${s.maildrop ?? "unreadable"} file(s) waiting`,
    s.oldest
      ? `oldest: ${s.oldest.queue_id}, queued ${s.oldest.age_seconds} s ago`
      : "oldest: none",
  );
  if (typeof s.warning === "string") lines.push(`warning: ${s.warning}`);
  return lines.join("\n");
}
