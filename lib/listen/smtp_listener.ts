/**
 * One listening socket — TCP (IPv4/IPv6) or a unix socket — running an SMTP
 * or LMTP server session per connection in the manager's event loop (Deno
 * cannot hand a socket to a child). It caps connections in total and per
 * client IP, reads unix peers' kernel credentials at accept, runs implicit
 * TLS before the session starts, and can be closed, waiting for sessions.
 */
import * as net from "node:net";
import { closeOnExecAll } from "../sys/cloexec.ts";
import { peerCred } from "../auth/peercred.ts";
import { formatListenAddress } from "../config/listeners.ts";
import type { ListenerConfig } from "../config/types.ts";
import { logEvent, logWarn } from "../log/log.ts";
import { metrics } from "../metrics/metrics.ts";
import { Conn } from "../net/conn.ts";
import { formatReply, reply } from "../wire/reply.ts";
import { runSession, type SessionContext } from "../smtp/session.ts";
import { prepareUnixPath } from "./unix_path.ts";

/** The one error listener of every accepted socket: errors reach the session through its reads. */
function ignore(): void {}

/** A running listener. */
export interface Listener {
  /** The bound address, e.g. "127.0.0.1:2525" or "unix:/path". */
  address: string;
  /** Open client connections right now (`skiff status`). */
  connections(): number;
  /** Stops accepting, then waits for open sessions to end (or closes them after graceMs). */
  close(graceMs: number): Promise<void>;
}

/**
 * What every session of a listener shares; the listener adds itself. `gate`:
 * sessions accepted before it resolves wait for it (the manager binds as
 * root and lets sessions in only after switching to `user`).
 */
export type ListenerContext = Omit<SessionContext, "listener"> & { gate?: Promise<void> };

/** Binds a listener; rejects with a clear message when the address cannot be bound. */
export async function startSmtpListener(
  lc: ListenerConfig,
  base: ListenerContext,
): Promise<Listener> {
  const ctx: SessionContext = { ...base, listener: lc };
  const limits = { ...ctx.config.limits, ...lc.limits };
  /** Open connections and their sessions (ending when the connection is closed). */
  const open = new Map<net.Socket, Promise<void>>();
  const perIp = new Map<string, number>();
  const refuse = (socket: net.Socket, why: string) => {
    // RFC 5321 §3.8: a server that cannot take the connection answers 421 and closes.
    socket.end(formatReply(reply(421, "4.3.2", `${ctx.config.hostname} Error: ${why}`)));
    logWarn("connection refused", { client: socket.remoteAddress ?? "unix", reason: why });
    metrics.rejected(formatListenAddress(lc.address), 421, "4.3.2");
  };
  /**
   * One connection from accept to close, as a single async function: its
   * frame is all an idle connection keeps here (a promise chain of
   * then/catch/finally held a closure and a promise per step).
   */
  const serve = async (socket: net.Socket, ip: string) => {
    try {
      // Always a turn of the event loop first, so the entry in `open` exists before `finally`.
      await base.gate;
      let conn: Conn;
      if (lc.tls === "implicit") {
        // RFC 8314 §3.3: TLS from the first byte; no plaintext is ever read.
        try {
          conn = await Conn.acceptTls(socket, {
            secureContext: ctx.secureContext!(),
            timeoutMs: limits.commandTimeout * 1000,
          });
        } catch (err) {
          logWarn("tls handshake failed", { client: ip || "unix", error: String(err) });
          return;
        }
      } else conn = new Conn(socket);
      if (lc.address.kind === "unix") conn.peer = peerCred(socket);
      await runSession(conn, ctx);
    } catch (err) {
      logWarn("session error", { client: ip || "unix", error: String(err) });
    } finally {
      socket.destroy();
      open.delete(socket);
      const n = (perIp.get(ip) ?? 1) - 1;
      if (n <= 0) perIp.delete(ip);
      else perIp.set(ip, n);
    }
  };
  // allowHalfOpen: a client that pipelines everything and then shuts down its side still
  // gets every reply (Node would otherwise end our side at its FIN).
  const server = net.createServer({ pauseOnConnect: false, allowHalfOpen: true }, (socket) => {
    const ip = socket.remoteAddress ?? "";
    if (open.size >= limits.connections) return refuse(socket, "too many connections");
    if (ip !== "" && (perIp.get(ip) ?? 0) >= limits.connectionsPerIp) {
      return refuse(socket, "too many connections from your address");
    }
    if (ip !== "") perIp.set(ip, (perIp.get(ip) ?? 0) + 1);
    socket.on("error", ignore); // reported through the session's reads
    open.set(socket, serve(socket, ip));
  });
  const shown = formatListenAddress(lc.address);
  if (lc.address.kind === "unix") await prepareUnixPath(lc.address.path);
  return await new Promise((resolve, reject) => {
    server.once("error", (err: Error) => {
      reject(new Error(`Cannot listen on ${shown}: ${err.message}`));
    });
    const bound = () => {
      closeOnExecAll(); // node:net listeners are not close-on-exec by themselves
      let where = shown;
      if (lc.address.kind === "unix") {
        const path = lc.address.path;
        try {
          // Owner first: chown may clear mode bits on some systems, never the reverse.
          if (lc.owner) Deno.chownSync(path, lc.owner.uid, lc.owner.gid);
          Deno.chmodSync(path, lc.mode);
        } catch (err) {
          server.close();
          try {
            Deno.removeSync(path);
          } catch { /* already gone */ }
          const what = lc.owner ? `owner ${lc.owner.text} and mode` : "mode";
          reject(new Error(`Cannot set the ${what} of ${shown}: ${(err as Error).message}`));
          return;
        }
      } else {
        const addr = server.address() as net.AddressInfo;
        where = formatListenAddress({ kind: "tcp", host: addr.address, port: addr.port });
      }
      logEvent("listening", { address: where, protocol: lc.protocol, tls: lc.tls, auth: lc.auth });
      resolve({
        address: where,
        connections: () => open.size,
        close: async (graceMs: number) => {
          // server.close() reports only once every connection ended: do not wait on it here.
          server.close();
          const timer = setTimeout(() => open.forEach((_, s) => s.destroy()), graceMs);
          await Promise.allSettled([...open.values()]);
          clearTimeout(timer);
          if (lc.address.kind === "unix") await Deno.remove(lc.address.path).catch(() => {});
        },
      });
    };
    if (lc.address.kind === "unix") server.listen(lc.address.path, bound);
    else server.listen({ host: lc.address.host, port: lc.address.port }, bound);
  });
}
