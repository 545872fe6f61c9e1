/**
 * Keeps SIGUSR1 from ever opening a V8 inspector. Deno 2.9.2 and later start
 * an inspector server on 127.0.0.1:9229 when the process receives SIGUSR1
 * (after a 500 ms grace period, and even with a Deno.addSignalListener
 * listener), and any local user can connect to it and run code as skiff —
 * logrotate-style scripts send SIGUSR1 to daemons routinely. Setting the
 * signal to SIG_IGN after Deno installs its handler leaves a race, so skiff
 * instead blocks SIGUSR1 in its signal mask and re-executes itself in place
 * (execv, same pid, same argv) before that grace period ends: every thread of
 * the new image inherits the blocked mask, so the signal stays pending and no
 * handler ever runs. Children started with Deno.Command inherit the mask too
 * (Deno does not reset it), so worker children are covered without an exec.
 */

import process from "node:process";
import { selfCommand } from "./self_command.ts";

/** SIGUSR1's bit in the kernel's signal mask (signal 10 on Linux). */
const SIGUSR1_BIT = 1n << 9n;
const SIG_BLOCK = 0;

type Libc = Deno.DynamicLibrary<{
  pthread_sigmask: { parameters: ["i32", "buffer", "buffer"]; result: "i32" };
  execv: { parameters: ["buffer", "buffer"]; result: "i32" };
}>;

function openLibc(): Libc {
  return Deno.dlopen("libc.so.6", {
    pthread_sigmask: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
    execv: { parameters: ["buffer", "buffer"], result: "i32" },
  });
}

/** True when the calling thread has SIGUSR1 blocked (read through pthread_sigmask). */
function blocked(libc: Libc): boolean {
  // sigset_t is 1024 bits in glibc; only the first word matters here.
  const old = new BigUint64Array(16);
  libc.symbols.pthread_sigmask(SIG_BLOCK, null, new Uint8Array(old.buffer));
  return (old[0] & SIGUSR1_BIT) !== 0n;
}

/**
 * Makes sure this process runs with SIGUSR1 blocked: returns at once when it
 * already does; otherwise blocks it and re-executes this program in place,
 * which does not return. Returns a reason when it cannot (not Linux, no FFI
 * permission), so the caller can log it.
 */
export function ensureSigusr1Blocked(): string | null {
  if (Deno.build.os !== "linux") return "SIGUSR1 blocking is implemented for Linux only";
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return "no FFI permission to block SIGUSR1";
  }
  const libc = openLibc();
  if (blocked(libc)) return null;
  const set = new BigUint64Array(16);
  set[0] = SIGUSR1_BIT;
  if (libc.symbols.pthread_sigmask(SIG_BLOCK, new Uint8Array(set.buffer), null) !== 0) {
    return "pthread_sigmask failed";
  }
  // The same program with the same permissions and arguments; argv[0] keeps
  // the name it was started by (a "sendmail" link must stay "sendmail").
  const self = selfCommand(Deno.args);
  const argv = [process.argv0 || self.command, ...self.args];
  const enc = new TextEncoder();
  const strings = argv.map((a) => enc.encode(a + "\0"));
  const pointers = new BigUint64Array(argv.length + 1); // NULL-terminated
  strings.forEach((s, i) =>
    pointers[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))
  );
  libc.symbols.execv(enc.encode(self.command + "\0"), new Uint8Array(pointers.buffer));
  return "execv failed"; // only reached when the exec did not happen
}
