/**
 * Unix peer credentials: the uid, gid and pid of the process at the other
 * end of a unix socket, as the kernel recorded them at connect time
 * (SO_PEERCRED, socket(7)). Deno's own unix sockets expose neither the fd
 * nor the credentials, so skiff reads them with getsockopt(2) through FFI on
 * the fd of a node:net socket. Nothing the client says can change them.
 */
import type * as net from "node:net";
import { userByUid } from "../sys/passwd.ts";

/** What the kernel says about a unix-socket peer. */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17; // Linux; struct ucred { pid_t pid; uid_t uid; gid_t gid; }

let libc:
  | Deno.DynamicLibrary<{
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"]; result: "i32" };
  }>
  | null = null;

function lib() {
  libc ??= Deno.dlopen("libc.so.6", {
    getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  });
  return libc;
}

/** The fd under a node:net socket, or -1 when the runtime does not show it. */
export function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  return typeof handle?.fd === "number" ? handle.fd : -1;
}

/** Reads SO_PEERCRED from a connected unix socket fd; null when it fails. */
export function peerCredOfFd(fd: number): PeerCred | null {
  if (Deno.build.os !== "linux" || fd < 0) return null;
  const buf = new Uint8Array(12);
  const len = new Uint32Array([12]);
  const rc = lib().symbols.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, new Uint8Array(len.buffer));
  if (rc !== 0 || len[0] !== 12) return null;
  const v = new DataView(buf.buffer);
  return { pid: v.getInt32(0, true), uid: v.getUint32(4, true), gid: v.getUint32(8, true) };
}

/** The peer credentials of a node:net unix socket; null when unavailable. */
export function peerCred(socket: net.Socket): PeerCred | null {
  return peerCredOfFd(socketFd(socket));
}

/**
 * The login name of a uid, or null when it has none or the name could not
 * serve as an address's local part (it becomes the sender the peer may use).
 */
export function loginOf(uid: number): string | null {
  const name = userByUid(uid)?.name;
  return name !== undefined && /^[a-z_][a-z0-9_.-]*\$?$/i.test(name) ? name : null;
}
