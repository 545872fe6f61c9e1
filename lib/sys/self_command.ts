/**
 * How skiff starts a copy of itself (Deno cannot fork). Compiled, the binary
 * is Deno.execPath() and takes our arguments directly; under `deno run` the
 * copy is `deno run <the permissions this process has> --config deno.json
 * main.ts <args>`, so the child has no more rights than its parent.
 */

const PERMISSIONS = ["read", "write", "net", "env", "run", "sys", "ffi"] as const;

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
      "--config",
      config.pathname,
      ...flags,
      main.pathname,
      ...args,
    ],
  };
}
