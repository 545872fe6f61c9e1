/**
 * Switches the manager from root to `user` for good: setgroups, setgid,
 * setuid through libc (FFI). glibc applies each of these to every thread of
 * the process (its "setxid" broadcast), which matters because Deno runs
 * tokio and V8 threads beside the main one; a raw syscall would change only
 * the calling thread. As root, setgid/setuid set the real, effective, saved
 * and filesystem ids together. The result is then read back from
 * /proc/self/status and every /proc/self/task/N/status, and anything but the
 * target ids in all four positions, and exactly the one group, refuses to
 * serve: a half-dropped manager is worse than none.
 */

import { listProcDir, readProcFile } from "../sys/procfs.ts";

type Libc = Deno.DynamicLibrary<{
  setgroups: { parameters: ["usize", "buffer"]; result: "i32" };
  setgid: { parameters: ["u32"]; result: "i32" };
  setuid: { parameters: ["u32"]; result: "i32" };
  __errno_location: { parameters: []; result: "pointer" };
}>;

function openLibc(): Libc {
  return Deno.dlopen("libc.so.6", {
    setgroups: { parameters: ["usize", "buffer"], result: "i32" },
    setgid: { parameters: ["u32"], result: "i32" },
    setuid: { parameters: ["u32"], result: "i32" },
    __errno_location: { parameters: [], result: "pointer" },
  });
}

function errno(libc: Libc): number {
  const p = libc.symbols.__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : -1;
}

/** The ids of one thread, from a /proc status file. */
export interface ThreadIds {
  uid: number[];
  gid: number[];
  groups: number[];
}

/** Parses the Uid:, Gid: and Groups: lines of /proc/<pid>/status (pure). */
export function parseStatusIds(text: string): ThreadIds {
  const field = (name: string) => {
    const m = new RegExp(`^${name}:[ \\t]*(.*)$`, "m").exec(text);
    if (!m) throw new Error(`No ${name}: line in /proc status`);
    return m[1].trim() === "" ? [] : m[1].trim().split(/\s+/).map(Number);
  };
  return { uid: field("Uid"), gid: field("Gid"), groups: field("Groups") };
}

/** What is wrong with `ids` for the target, or null when all match. */
export function idsMismatch(ids: ThreadIds, uid: number, gid: number): string | null {
  if (ids.uid.length !== 4 || ids.uid.some((x) => x !== uid)) {
    return `Uid is ${ids.uid.join(" ")}, expected ${uid} (real, effective, saved, fs)`;
  }
  if (ids.gid.length !== 4 || ids.gid.some((x) => x !== gid)) {
    return `Gid is ${ids.gid.join(" ")}, expected ${gid} (real, effective, saved, fs)`;
  }
  if (ids.groups.length !== 1 || ids.groups[0] !== gid) {
    return `Groups are "${ids.groups.join(" ")}", expected only ${gid}`;
  }
  return null;
}

/** Checks this process and each of its threads runs as uid/gid; throws naming the first that does not. */
export function verifyIds(uid: number, gid: number): void {
  const check = (path: string) => {
    const why = idsMismatch(parseStatusIds(readProcFile(path)), uid, gid);
    if (why) throw new Error(`Privileges not dropped: ${path}: ${why}`);
  };
  check("/proc/self/status");
  let threads = 0;
  for (const t of listProcDir("/proc/self/task")) {
    try {
      check(`/proc/self/task/${t}/status`);
      threads++;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue; // the thread ended meanwhile
      throw err;
    }
  }
  if (threads === 0) throw new Error("Privileges not dropped: no thread found in /proc/self/task");
}

/** Drops from root to uid/gid (supplementary groups: gid only), then verifies; throws on any failure. */
export function dropPrivileges(uid: number, gid: number): void {
  if (uid === 0 || gid === 0) throw new Error("Refusing to switch to uid or gid 0");
  const libc = openLibc();
  try {
    const groups = new Uint32Array([gid]);
    if (libc.symbols.setgroups(1n, new Uint8Array(groups.buffer)) !== 0) {
      throw new Error(`setgroups(${gid}) failed: errno ${errno(libc)}`);
    }
    if (libc.symbols.setgid(gid) !== 0) {
      throw new Error(`setgid(${gid}) failed: errno ${errno(libc)}`);
    }
    if (libc.symbols.setuid(uid) !== 0) {
      throw new Error(`setuid(${uid}) failed: errno ${errno(libc)}`);
    }
  } finally {
    libc.close();
  }
  verifyIds(uid, gid);
}
