/**
 * The manager's side of the control socket: what each request does in the
 * running `skiff serve` (flush, reload, status, maildrop pickup and the queue
 * operations), with the scheduler hooks that make queue changes safe while
 * deliveries run.
 */
import type { Config } from "../config/types.ts";
import type { QueueManager } from "../queue/manager.ts";
import { VERSION } from "../version.ts";
import type { ControlRequest } from "./protocol.ts";
import { addToTotals, emptyTotals, type ListItem, streamQueue } from "./queue_list.ts";
import { applyQueueOp, type QueueHooks, showMessage } from "./queue_ops.ts";
import { type ControlHandler, StreamedReply } from "./server.ts";
import { spoolStatus } from "./status.ts";

/** What the handler needs from the running manager. */
export interface ManagerContext {
  config: Config;
  manager: QueueManager;
  /** Epoch ms the manager started. */
  startedAt: number;
  /** Open inbound connections, when the listeners can say. */
  connections: () => number | null;
  /** Re-reads the config; resolves to what changed. */
  reload: () => Promise<Record<string, unknown>>;
  /** Takes in what waits in the maildrop; resolves to how many messages. */
  pickup: () => Promise<number>;
}

/** Scheduler hooks backed by the running QueueManager. */
export function managerHooks(manager: QueueManager): QueueHooks {
  return {
    withdraw: (id, fn) => manager.withdraw(id, fn),
    retry: (ids) => manager.flush(ids),
    // Scheduled but not yet due: the retry() that follows a release makes it due
    // and forced, so its deferred recipients are tried now despite their backoff.
    enqueue: (id) => manager.enqueue(id, Number.MAX_SAFE_INTEGER),
    activeIds: () => manager.activeIds(),
  };
}

/** The request handler of a running manager. */
export function managerHandler(ctx: ManagerContext): ControlHandler {
  const hooks = managerHooks(ctx.manager);
  const spoolDir = ctx.config.spoolDir;
  return async (req: ControlRequest) => {
    switch (req.cmd) {
      case "flush": {
        const picked = await ctx.pickup();
        ctx.manager.flush();
        return { pid: Deno.pid, queued: ctx.manager.size, picked_up: picked };
      }
      case "pickup":
        return { picked_up: await ctx.pickup() };
      case "reload":
        return await ctx.reload();
      case "status":
        return {
          pid: Deno.pid,
          uid: Deno.uid(),
          version: VERSION,
          uptime_seconds: Math.floor((Date.now() - ctx.startedAt) / 1000),
          connections: ctx.connections(),
          scheduled: ctx.manager.size,
          ...await spoolStatus(ctx.config, hooks),
        };
      case "queue":
        switch (req.op) {
          case "list":
            return listing(spoolDir, hooks);
          case "show":
            return { message: await showMessage(spoolDir, req.select.ids?.[0] ?? "", hooks) };
          default:
            return { ...await applyQueueOp(spoolDir, req.op, req.select, hooks) };
        }
    }
  };
}

/** `queue list` as a streamed reply: a line per message, then the totals. */
function listing(spoolDir: string, hooks: QueueHooks): StreamedReply {
  const totals = emptyTotals();
  async function* items(): AsyncGenerator<ListItem[]> {
    for await (const slice of streamQueue(spoolDir, { activeIds: () => hooks.activeIds() })) {
      for (const item of slice) addToTotals(totals, item);
      yield slice;
    }
  }
  return new StreamedReply(items(), () => ({ ...totals }));
}
