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

/**
 * Runs a program to its end within `timeoutMs` (SIGKILL after that): its
 * exit code and stdout+stderr. For peers that may hang (postfix start/stop).
 */
export async function runWithTimeout(
  cmd: string,
  args: string[],
  timeoutMs: number,
): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, timeoutMs);
  try {
    const o = await child.output();
    const dec = new TextDecoder();
    return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves once something accepts TCP connections on 127.0.0.1:`port`,
 * polling every `everyMs`; after `timeoutMs` throws an error naming `what`
 * and the last connect error. The one "wait for a peer to listen" of the tests.
 */
export async function waitListening(
  port: number,
  timeoutMs: number,
  opts: { what?: string; everyMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`${opts.what ?? "Nothing"} does not listen on port ${port}: ${err}`);
      }
      await new Promise((r) => setTimeout(r, opts.everyMs ?? 50));
    }
  }
}
