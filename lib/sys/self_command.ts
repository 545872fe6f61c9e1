/**
 * How skiff starts a copy of itself (Deno cannot fork). Compiled, the binary
 * is Deno.execPath() and takes our arguments directly; under `deno run` the
 * copy is `deno run <the permissions this process has> --config deno.json
 * main.ts <args>`, so the child has no more rights than its parent.
 */

/**
 * The permissions skiff runs with: the one list behind deno.json's start
 * task (checked by tests/permissions_test.ts), `deno task compile`, the
 * tests' and scripts' `deno run` of main.ts, and the copies started here.
 */
export const PERMISSIONS = ["read", "write", "net", "env", "run", "sys", "ffi"] as const;

/** PERMISSIONS as `deno run` flags. */
export const PERMISSION_FLAGS: readonly string[] = PERMISSIONS.map((p) => `--allow-${p}`);

/**
 * The V8 flags skiff runs with, beside the permissions and in the same
 * places. --optimize-for-size makes V8 grow its heap in smaller steps and
 * collect sooner. The manager allocates fast while accepting (each message's
 * buffers, replies and log lines are short-lived) and by default V8 let the
 * heap grow to ~80 MB of mostly garbage that it never gave back. Measured
 * with 3,000 messages of 2 KB over 20 sessions against a running serve
 * (docs/benchmarks.md, "V8 heap flags"): peak RSS 160–181 MB without the
 * flag, 90–93 MB with it; wall time 13.8 / 19.3 / 17.9 s against 16.1 / 17.5
 * / 17.0 s, within this machine's noise.
 */
export const V8_FLAGS: readonly string[] = ["--v8-flags=--optimize-for-size"];

/** The command and arguments that run `skiff <args>` again. */
export function selfCommand(args: string[]): { command: string; args: string[] } {
  if (Deno.build.standalone) return { command: Deno.execPath(), args };
  const flags: string[] = [];
  for (const name of PERMISSIONS) {
    if (Deno.permissions.querySync({ name }).state === "granted") flags.push(`--allow-${name}`);
  }
  const main = new URL("../../main.ts", import.meta.url);
  const config = new URL("../../deno.json", import.meta.url);
  return {
    command: Deno.execPath(),
    args: [
      "run",
      "--quiet",
      "--no-prompt",
      // A child never fetches code: what it needs is in the module cache the manager used.
      "--cached-only",
      "--config",
      config.pathname,
      ...flags,
      ...V8_FLAGS,
      main.pathname,
      ...args,
    ],
  };
}
