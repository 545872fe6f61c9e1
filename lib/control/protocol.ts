/**
 * The control socket's wire format: one JSON request line from the client,
 * one JSON reply line from the manager, then the manager closes. `queue
 * list` is the exception: a line per message (no "ok" key), then an end
 * line with "ok" and the totals (docs/operations.md, "Control socket"). Requests
 * are a closed set of commands (checked, never used to build a method name);
 * anything else is answered with an error reply.
 */
import { isQueueId } from "../spool/queue_id.ts";

/** Which messages a queue operation applies to. */
export interface Selection {
  /** Queue ids. */
  ids?: string[];
  /** Messages with an open recipient in this domain (lower case). */
  domain?: string;
  /** Every message. */
  all?: boolean;
}

/** Operations on queued messages. */
export type QueueOp = "list" | "show" | "hold" | "release" | "delete" | "retry";

/** A request on the control socket. */
export type ControlRequest =
  | { cmd: "flush" }
  | { cmd: "reload" }
  | { cmd: "status" }
  | { cmd: "pickup" }
  | { cmd: "queue"; op: QueueOp; select: Selection };

/** A reply on the control socket. */
export type ControlReply =
  | ({ ok: true } & Record<string, unknown>)
  | { ok: false; error: string };

/** Largest request line the manager reads. */
export const MAX_REQUEST = 64 * 1024;

const QUEUE_OPS: readonly QueueOp[] = ["list", "show", "hold", "release", "delete", "retry"];

/** Checks a parsed request line; throws an Error naming what is wrong. */
export function checkRequest(value: unknown): ControlRequest {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("Request is not an object");
  }
  const v = value as Record<string, unknown>;
  switch (v.cmd) {
    case "flush":
    case "reload":
    case "status":
    case "pickup":
      return { cmd: v.cmd };
    case "queue": {
      if (!QUEUE_OPS.includes(v.op as QueueOp)) {
        throw new Error(`Unknown queue operation ${JSON.stringify(v.op)}`);
      }
      return { cmd: "queue", op: v.op as QueueOp, select: checkSelection(v.select) };
    }
    default:
      throw new Error(`Unknown command ${JSON.stringify(v.cmd)}`);
  }
}

function checkSelection(value: unknown): Selection {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null) throw new Error("Selection is not an object");
  const s = value as Record<string, unknown>;
  const out: Selection = {};
  if (s.ids !== undefined) {
    if (!Array.isArray(s.ids) || !s.ids.every((i) => typeof i === "string")) {
      throw new Error("Selection ids must be a list of strings");
    }
    // Named here, at the boundary, as the CLI does: not merely ignored further down.
    const bad = s.ids.find((i) => !isQueueId(i));
    if (bad !== undefined) throw new Error(`${JSON.stringify(bad)} is not a queue id`);
    out.ids = s.ids;
  }
  if (s.domain !== undefined) {
    if (typeof s.domain !== "string") throw new Error("Selection domain must be a string");
    out.domain = s.domain.toLowerCase();
  }
  if (s.all !== undefined) out.all = s.all === true;
  return out;
}

/** The control socket of a spool: inside the spool directory (mode 0700), itself 0600. */
export function controlSocketPath(spoolDir: string): string {
  return `${spoolDir.replace(/\/+$/, "")}/control.sock`;
}
