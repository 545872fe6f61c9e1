/**
 * How the manager starts a child — a local-delivery worker (a copy of
 * skiff) or a program destination — through one interface with two named
 * implementations, chosen once at start (lib/cli/serve.ts):
 *
 * - `direct` (this file): Deno.Command from the manager itself. Used when
 *   skiff is not root, or root without `user` (then it can still switch
 *   uid per child, as before privilege separation).
 * - `privhelper` (lib/privsep/client.ts): the manager runs as `user` and
 *   asks the privileged helper, the one process that kept uid 0, to start
 *   the child as another uid.
 *
 * Either way the child gets a cleared environment plus the documented list
 * (lib/sys/child_env.ts), its home (or /) as working directory, no
 * descriptor but 0-2 (lib/sys/cloexec.ts), and its stderr comes back,
 * bounded, with its exit status, so every failure can be logged with its cause.
 */
import type { RunAs } from "./passwd.ts";
import { selfCommand } from "./self_command.ts";
import { childCwd, childEnv } from "./child_env.ts";
import { closeOnExecAll } from "./cloexec.ts";
import { userByUid } from "./passwd.ts";

/** Most bytes of a child's stderr kept (the rest is read and dropped). */
export const MAX_STDERR = 4096;

/** What to start. */
export interface SpawnRequest {
  /** "worker": `skiff worker`; "program": a program destination's argv. */
  kind: "worker" | "program";
  /** The program's argv (kind "program"). */
  argv?: string[];
  /** Run as this user; null: the manager's own uid. */
  user: RunAs | null;
  /** Another command instead of `skiff worker` (tests; direct spawning only). */
  command?: { command: string; args: string[] };
}

/** How a child ended, with the start of what it wrote on stderr. */
export interface ChildExit {
  code: number;
  signal: string | null;
  /** The last MAX_STDERR bytes; lines kept, other control characters replaced by spaces. */
  stderr: string;
}

/** A running child. */
export interface SpawnedChild {
  pid: number;
  stdin: WritableStream<Uint8Array>;
  stdout: ReadableStream<Uint8Array>;
  status: Promise<ChildExit>;
  /** Sends SIGKILL, or SIGTERM (a child that is gone already is fine). */
  kill(signal?: "SIGTERM" | "SIGKILL"): void;
}

/** Starts children; see the module comment for the two kinds. */
export interface Spawner {
  readonly kind: "direct" | "privhelper";
  spawn(req: SpawnRequest): Promise<SpawnedChild>;
  close(): Promise<void>;
}

/**
 * Reads a stream to its end, keeping its last `max` bytes (where a crash
 * puts its cause), cleaned: control characters other than line ends become
 * spaces, so each line can be logged (quoted) as it was written.
 */
export async function captureBounded(
  stream: ReadableStream<Uint8Array>,
  max = MAX_STDERR,
): Promise<string> {
  let kept = new Uint8Array(0);
  try {
    for await (const chunk of stream) {
      const all = new Uint8Array(kept.length + chunk.length);
      all.set(kept);
      all.set(chunk, kept.length);
      kept = all.length > max ? all.slice(all.length - max) : all;
    }
  } catch { /* the child went away: what we have is the answer */ }
  const text = new TextDecoder().decode(kept);
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x09\x0b-\x1f\x7f]+/g, " ").replace(/\n+/g, "\n").trim();
}

/** The argv, environment and directory for a request (shared by both spawners). */
export function childSpec(
  req: SpawnRequest,
  worker: { command: string; args: string[] },
): { command: string; args: string[]; env: Record<string, string>; cwd: string } {
  const cmd = req.kind === "worker" ? worker : { command: req.argv![0], args: req.argv!.slice(1) };
  const pw = req.user ? userByUid(req.user.uid) : userByUid(Deno.uid() ?? -1);
  const who = pw ? { name: pw.name, home: pw.home } : null;
  return {
    ...cmd,
    env: childEnv(who, { skiff: req.kind === "worker" }),
    cwd: childCwd(pw?.home),
  };
}

/** Spawns with Deno.Command; `ids` switches uid/gid (root only). */
export function spawnChild(
  spec: { command: string; args: string[]; env: Record<string, string>; cwd: string },
  ids: { uid: number; gid: number } | null,
): SpawnedChild {
  // Same synchronous turn as the spawn: nothing opened in between can leak.
  closeOnExecAll();
  const child = new Deno.Command(spec.command, {
    args: spec.args,
    clearEnv: true,
    env: spec.env,
    cwd: spec.cwd,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    // Both: setting only uid leaves gid 0. Deno clears the supplementary groups.
    ...(ids ?? {}),
  }).spawn();
  const stderr = captureBounded(child.stderr);
  return {
    pid: child.pid,
    stdin: child.stdin,
    stdout: child.stdout,
    status: child.status.then(async (s) => ({
      code: s.code,
      signal: s.signal ?? null,
      stderr: await stderr,
    })),
    kill: (signal = "SIGKILL") => {
      try {
        child.kill(signal);
      } catch { /* gone */ }
    },
  };
}

/** Starts children from the manager itself. */
export class DirectSpawner implements Spawner {
  readonly kind = "direct";

  // deno-lint-ignore require-await
  async spawn(req: SpawnRequest): Promise<SpawnedChild> {
    const worker = req.command ?? selfCommand(["worker"]);
    const ids = req.user && Deno.uid() === 0 ? { uid: req.user.uid, gid: req.user.gid } : null;
    return spawnChild(childSpec(req, worker), ids);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
