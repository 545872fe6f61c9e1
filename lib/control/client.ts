/**
 * The client side of the control socket, used by `skiff flush`, `status`,
 * `queue` and `sendmail -q`: sends one request, reads the one reply. A
 * missing socket or a refused connection means no manager is running, which
 * callers handle by working on the spool themselves.
 */
import * as net from "node:net";
import { type ControlReply, type ControlRequest, controlSocketPath } from "./protocol.ts";

/** Raised when the manager answered with an error, or broke off. */
export class ControlError extends Error {}

/**
 * Sends a request to the manager of `spoolDir`. Resolves to null when no
 * manager listens there; rejects with ControlError on a failed request.
 */
export function controlRequest(
  spoolDir: string,
  req: ControlRequest,
  opts: { timeoutMs?: number } = {},
): Promise<(ControlReply & { ok: true }) | null> {
  const path = controlSocketPath(spoolDir);
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path });
    let buf = "";
    let connected = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ControlError(`No answer from the manager on ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
    };
    socket.setEncoding("utf8");
    socket.once("connect", () => {
      connected = true;
      socket.write(JSON.stringify(req) + "\n");
    });
    socket.on("data", (d: string) => {
      buf += d;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      finish();
      let reply: ControlReply;
      try {
        reply = JSON.parse(buf.slice(0, nl));
      } catch {
        reject(new ControlError(`The manager sent a reply that is not JSON`));
        return;
      }
      if (reply.ok) resolve(reply as ControlReply & { ok: true });
      else reject(new ControlError(reply.error));
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      finish();
      if (!connected && (err.code === "ENOENT" || err.code === "ECONNREFUSED")) resolve(null);
      else reject(new ControlError(`Control socket ${path}: ${err.message}`));
    });
    socket.on("close", () => {
      if (buf.indexOf("\n") >= 0) return;
      finish();
      if (connected) reject(new ControlError("The manager closed the control socket early"));
    });
  });
}
