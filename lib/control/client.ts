/**
 * The client side of the control socket, used by `skiff flush`, `status`,
 * `queue` and `sendmail -q`: sends one request, reads the reply — one line,
 * or for `queue list` a line per message and an end line (controlStream). A
 * missing socket or a refused connection means no manager is running, which
 * callers handle by working on the spool themselves.
 */
import * as net from "node:net";
import { type ControlReply, type ControlRequest, controlSocketPath } from "./protocol.ts";

/** Raised when the manager answered with an error, or broke off. */
export class ControlError extends Error {}

/** Raised when this user may not reach the control socket (only root and skiff's user may). */
export class ControlDenied extends ControlError {}

/** Longest reply line read (a `queue show` of a message with a long history fits). */
const MAX_LINE = 16 * 1024 * 1024;

/**
 * Sends a request to the manager of `spoolDir`. Resolves to null when no
 * manager listens there; rejects with ControlError on a failed request.
 */
export async function controlRequest(
  spoolDir: string,
  req: ControlRequest,
  opts: { timeoutMs?: number } = {},
): Promise<(ControlReply & { ok: true }) | null> {
  return await exchange(spoolDir, req, () => {
    throw new ControlError("The manager sent more than one reply line");
  }, opts);
}

/**
 * Sends a request whose reply is streamed (`queue list`): `onItems` gets
 * each batch of item lines as they arrive (and may write them out: the
 * socket is not read meanwhile, which is the backpressure), and the promise
 * resolves to the end line. Null when no manager listens; ControlError when
 * the manager refused or the listing failed midway. An error thrown by
 * `onItems` (a closed stdout) ends the exchange and rejects with it.
 */
export async function controlStream(
  spoolDir: string,
  req: ControlRequest,
  onItems: (items: Record<string, unknown>[]) => void,
  opts: { timeoutMs?: number } = {},
): Promise<(ControlReply & { ok: true }) | null> {
  return await exchange(spoolDir, req, onItems, opts);
}

/**
 * One connection: lines without an "ok" key are items; the first line
 * with one is the reply (or the end line), after which nothing is read.
 * `timeoutMs` bounds the wait for each piece of the reply, not the whole.
 */
function exchange(
  spoolDir: string,
  req: ControlRequest,
  onItems: (items: Record<string, unknown>[]) => void,
  opts: { timeoutMs?: number },
): Promise<(ControlReply & { ok: true }) | null> {
  const path = controlSocketPath(spoolDir);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    let partial = "";
    let connected = false;
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        fail(new ControlError(`No answer from the manager on ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
    };
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      socket.destroy();
    };
    const fail = (err: Error) => {
      if (settled) return;
      finish();
      reject(err);
    };
    arm();
    socket.setEncoding("utf8");
    socket.once("connect", () => {
      connected = true;
      socket.write(JSON.stringify(req) + "\n");
    });
    socket.on("data", (d: string) => {
      if (settled) return;
      arm();
      // Only the new text is searched for line ends: a long reply costs
      // linear time (joining and searching it whole made it quadratic).
      const lines = (partial + d).split("\n");
      partial = lines.pop()!;
      if (partial.length > MAX_LINE) {
        fail(new ControlError(`The manager sent a reply line over ${MAX_LINE} bytes`));
        return;
      }
      const items: Record<string, unknown>[] = [];
      for (const line of lines) {
        let value: Record<string, unknown>;
        try {
          value = JSON.parse(line);
        } catch {
          fail(new ControlError("The manager sent a reply that is not JSON"));
          return;
        }
        if (typeof value !== "object" || value === null || !Object.hasOwn(value, "ok")) {
          items.push(value);
          continue;
        }
        try {
          if (items.length > 0) onItems(items);
        } catch (err) {
          fail(err as Error);
          return;
        }
        finish();
        const reply = value as ControlReply;
        if (reply.ok) resolve(reply as ControlReply & { ok: true });
        else reject(new ControlError(reply.error));
        return;
      }
      try {
        if (items.length > 0) onItems(items);
      } catch (err) {
        fail(err as Error);
      }
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (settled) return;
      if (!connected && (err.code === "ENOENT" || err.code === "ECONNREFUSED")) {
        finish();
        resolve(null);
      } else if (err.code === "EACCES" || err.code === "EPERM") {
        fail(new ControlDenied(`Control socket ${path}: ${err.message}`));
      } else fail(new ControlError(`Control socket ${path}: ${err.message}`));
    });
    socket.on("close", () => {
      if (connected) fail(new ControlError("The manager closed the control socket early"));
    });
  });
}
