/**
 * Close-on-exec for every descriptor skiff holds, so no child (worker,
 * program, privileged helper) inherits a listening socket, a spool file or a
 * client connection. Deno's own files and sockets are opened with O_CLOEXEC,
 * but the node:net servers' listening sockets are not (issue 8: a `.forward`
 * program accepted on the inherited submission socket). Rather than find those
 * descriptors one by one, one close_range(3, ~0, CLOSE_RANGE_CLOEXEC) call
 * (Linux 5.11, glibc 2.34) marks them all; it also works after the manager
 * switched uid, when /proc/self/fd is no longer readable (the process is no
 * longer dumpable). Older kernels fall back to fcntl on each descriptor listed
 * in /proc/self/fd. It runs after the listeners are bound and again just before
 * every spawn, in the same synchronous turn, so nothing opened in between can leak.
 */

const CLOSE_RANGE_CLOEXEC = 1 << 2;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

type Libc = Deno.DynamicLibrary<{
  close_range: { parameters: ["u32", "u32", "i32"]; result: "i32" };
  fcntl: { parameters: ["i32", "i32", "i32"]; result: "i32" };
}>;

let libc: Libc | null = null;

function open(): Libc | null {
  if (libc) return libc;
  if (Deno.build.os !== "linux") return null;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
  libc = Deno.dlopen("libc.so.6", {
    close_range: { parameters: ["u32", "u32", "i32"], result: "i32" },
    fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  });
  return libc;
}

/**
 * Sets FD_CLOEXEC on every descriptor from 3 up. Returns false when it could
 * not (no FFI permission, not Linux): the caller then relies on Deno's own
 * O_CLOEXEC, which covers everything but node:net listeners.
 */
export function closeOnExecAll(): boolean {
  const c = open();
  if (!c) return false;
  if (c.symbols.close_range(3, 0xffffffff, CLOSE_RANGE_CLOEXEC) === 0) return true;
  // Before Linux 5.11: each descriptor this process can list.
  let fds: number[];
  try {
    fds = [...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name)).filter((n) => n > 2);
  } catch {
    return false;
  }
  for (const fd of fds) {
    const flags = c.symbols.fcntl(fd, F_GETFD, 0);
    if (flags >= 0) c.symbols.fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
  }
  return true;
}
