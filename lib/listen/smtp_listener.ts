/**
 * A TCP listener that runs an SMTP server session per connection in the
 * manager's event loop (Deno cannot hand a socket to a child). It caps
 * concurrent connections and can be closed, waiting for sessions to end.
 */
import * as net from "node:net";
import type { ListenerConfig } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { Conn } from "../net/conn.ts";
import { formatReply, reply } from "../smtp/reply.ts";
import { runSession, type SessionContext } from "../smtp/session.ts";

/** A running listener. */
export interface Listener {
  /** The bound address, e.g. "127.0.0.1:2525". */
  address: string;
  /** Stops accepting, then waits for open sessions to end (or closes them after graceMs). */
  close(graceMs: number): Promise<void>;
}

/** Binds a listener; rejects with a clear message when the address cannot be bound. */
export function startSmtpListener(lc: ListenerConfig, ctx: SessionContext): Promise<Listener> {
  const open = new Set<net.Socket>();
  const sessions = new Set<Promise<void>>();
  const server = net.createServer({ pauseOnConnect: false }, (socket) => {
    if (open.size >= ctx.config.limits.connections) {
      // RFC 5321 §3.8: a server that cannot take the connection answers 421 and closes.
      socket.end(formatReply(reply(421, "4.3.2", `${ctx.config.hostname} Too many connections`)));
      logWarn("connection refused", { client: socket.remoteAddress, reason: "connection limit" });
      return;
    }
    open.add(socket);
    const done = runSession(new Conn(socket), ctx).finally(() => {
      open.delete(socket);
      sessions.delete(done);
    });
    sessions.add(done);
  });
  const host = lc.address.host;
  const shown = host.includes(":") ? `[${host}]:${lc.address.port}` : `${host}:${lc.address.port}`;
  return new Promise((resolve, reject) => {
    server.once("error", (err: Error) => {
      reject(new Error(`Cannot listen on ${shown}: ${err.message}`));
    });
    server.listen({ host, port: lc.address.port }, () => {
      const addr = server.address() as net.AddressInfo;
      const bound = host.includes(":")
        ? `[${addr.address}]:${addr.port}`
        : `${addr.address}:${addr.port}`;
      logEvent("listening", { address: bound, protocol: lc.protocol });
      resolve({
        address: bound,
        close: async (graceMs: number) => {
          // server.close() reports only once every connection ended: do not wait on it here.
          server.close();
          const timer = setTimeout(() => open.forEach((s) => s.destroy()), graceMs);
          await Promise.allSettled([...sessions]);
          clearTimeout(timer);
        },
      });
    });
  });
}
