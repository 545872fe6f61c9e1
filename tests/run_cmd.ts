/** Runs programs for tests: exit code and output, with optional stdin, env and cwd. */

/** How to run a command. */
export interface RunOptions {
  stdin?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** Runs cmd[0] with cmd[1..] to its end; stdout and stderr kept apart. */
export async function runCommand(
  cmd: string[],
  opts: RunOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const o = await child.output();
  const dec = new TextDecoder();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/** Runs a peer program: its exit code and stdout+stderr together. */
export async function run(cmd: string[], stdin?: string): Promise<{ code: number; out: string }> {
  const r = await runCommand(cmd, { stdin });
  return { code: r.code, out: r.stdout + r.stderr };
}
