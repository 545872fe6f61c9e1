/**
 * `skiff privhelper`: the privileged helper, the one skiff process that keeps
 * uid 0 after start (docs/security.md). The manager starts it before it
 * switches to `user` and is then its only client, over the helper's stdin and
 * stdout (lib/privsep/frames.ts). It does one thing: start a child as another
 * user and relay the child's stdin, stdout, exit status and (bounded) stderr.
 * Every request is checked as untrusted input, because a compromised manager
 * is exactly what this process must contain:
 *
 * - never uid or gid 0; the user must be a name in /etc/passwd whose uid is
 *   the one asked for, and the gid that user's primary group (or, for the
 *   manager's own user and configured programs, the group the config names);
 *   a worker runs as an arbitrary local user only when the config delivers as
 *   local users (`local_users`, `forward`), else only as `user`, a route's
 *   user or nobody;
 * - the program is either the skiff worker command, which the helper builds
 *   itself, or the argv of a `type = "program"` route in the config the
 *   helper loaded itself, run as that route's user (or `user` when it has none).
 *
 * It holds no network, write or environment permission, and a protocol
 * error or the manager's end of the pipe closing ends it (children killed).
 */
import type { Config } from "../config/types.ts";
import { loadConfig } from "../config/load.ts";
import type { RunAs } from "../route/types.ts";
import { rememberDenoDir } from "../sys/child_env.ts";
import { readPasswd } from "../sys/passwd.ts";
import { dropPermissions } from "../sys/permissions.ts";
import { childSpec, spawnChild, type SpawnedChild } from "../sys/spawn.ts";
import { selfCommand } from "../worker/self_command.ts";
import {
  encodeFrame,
  type Frame,
  FrameWriter,
  jsonFrame,
  jsonPayload,
  MAX_PAYLOAD,
  readFrames,
  T,
} from "./frames.ts";

/** Children running at once through one helper. */
export const MAX_CHILDREN = 256;
const MAX_ARGS = 256;
const MAX_ARG_LENGTH = 4096;

/** A checked spawn request. */
export interface CheckedSpawn {
  kind: "worker" | "program";
  argv?: string[];
  user: RunAs;
}

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;

/** Checks one SPAWN payload against the helper's own config and /etc/passwd; throws why not. */
export function checkSpawn(cfg: Config, v: Record<string, unknown>): CheckedSpawn {
  const kind = v.kind;
  if (kind !== "worker" && kind !== "program") throw new Error("Unknown kind of child");
  const u = v.user as Record<string, unknown> | undefined;
  if (typeof u !== "object" || u === null || typeof u.name !== "string") {
    throw new Error("Request names no user");
  }
  if (!isId(u.uid) || !isId(u.gid)) {
    throw new Error(`Refusing uid ${u.uid} gid ${u.gid}: only positive ids, never 0`);
  }
  const pw = readPasswd().find((e) => e.name === u.name);
  if (!pw) throw new Error(`No user ${JSON.stringify(u.name)} in /etc/passwd`);
  if (pw.uid !== u.uid || pw.uid === 0) {
    throw new Error(`User ${pw.name} has uid ${pw.uid}, not ${u.uid}`);
  }
  const user: RunAs = { name: pw.name, uid: u.uid, gid: u.gid };
  const self = cfg.user;
  const isSelf = self !== null && self.uid === user.uid && self.gid === user.gid;
  if (kind === "worker") {
    if (v.argv !== undefined) throw new Error("A worker request carries no argv");
    if (user.gid !== pw.gid && !isSelf) {
      throw new Error(`Gid ${user.gid} is not the primary group of ${pw.name} (${pw.gid})`);
    }
    // Deliveries run as any local user only when the config delivers as them.
    const d = cfg.delivery;
    const routeUser = cfg.routes.some((r) =>
      "user" in r.destination && r.destination.user?.uid === user.uid
    );
    if (!d.localUsers && !d.forward && !isSelf && !routeUser && pw.name !== "nobody") {
      throw new Error(
        `Deliveries do not run as ${pw.name} in ${cfg.source} (no local_users, forward or route user)`,
      );
    }
    return { kind, user };
  }
  const argv = v.argv;
  if (
    !Array.isArray(argv) || argv.length === 0 || argv.length > MAX_ARGS ||
    !argv.every((a) => typeof a === "string" && a.length <= MAX_ARG_LENGTH && !a.includes("\0"))
  ) throw new Error("Program request has no valid argv");
  const same = (c: string[]) => c.length === argv.length && c.every((a, i) => a === argv[i]);
  const route = cfg.routes.find((r) =>
    r.destination.kind === "program" && same(r.destination.command) &&
    (r.destination.user
      ? r.destination.user.uid === user.uid && r.destination.user.gid === user.gid
      : isSelf)
  );
  if (!route) {
    throw new Error(
      `Program ${JSON.stringify(argv[0])} as ${user.name} is not a program route in ${cfg.source}`,
    );
  }
  return { kind, argv: argv as string[], user };
}

interface Channel {
  child: SpawnedChild;
  stdin: WritableStreamDefaultWriter<Uint8Array>;
  chain: Promise<unknown>;
}

const say = (msg: string) => console.error(`skiff privhelper: ${msg}`);
const EMPTY = new Uint8Array(0);

/** The helper's side of the pipes: one channel per child. */
class HelperServer {
  #cfg: Config;
  #worker: { command: string; args: string[] };
  #out = new FrameWriter(Deno.stdout.writable);
  #channels = new Map<number, Channel>();

  constructor(cfg: Config, worker: { command: string; args: string[] }) {
    this.#cfg = cfg;
    this.#worker = worker;
  }

  /** Serves frames until the manager closes the pipe (0) or breaks the protocol (1). */
  async run(): Promise<number> {
    await this.#out.send(jsonFrame(T.READY, 0, { pid: Deno.pid }));
    let code = 0;
    try {
      for await (const f of readFrames(Deno.stdin.readable)) await this.#handle(f);
    } catch (err) {
      say(`protocol error, stopping: ${(err as Error).message}`);
      code = 1;
    }
    for (const ch of this.#channels.values()) ch.child.kill();
    await this.#out.close().catch(() => {});
    return code;
  }

  async #handle(f: Frame): Promise<void> {
    const ch = this.#channels.get(f.channel);
    switch (f.type) {
      case T.SPAWN:
        return await this.#spawn(f);
      case T.STDIN:
      case T.STDIN_EOF:
        if (ch) this.#stdin(ch, f); // else the child exited; its EXIT frame is on the way
        return;
      case T.KILL:
        ch?.child.kill(jsonPayload(f).signal === "SIGTERM" ? "SIGTERM" : "SIGKILL");
        return;
      case T.RELOAD:
        return await this.#reload();
      default:
        throw new Error(`Unexpected frame type ${f.type}`);
    }
  }

  async #spawn(f: Frame): Promise<void> {
    const req = jsonPayload(f);
    if (this.#channels.has(f.channel) || f.channel === 0) {
      throw new Error(`Channel ${f.channel} is in use`);
    }
    if (this.#channels.size >= MAX_CHILDREN) {
      await this.#out.send(jsonFrame(T.REFUSED, f.channel, { error: "Too many children" }));
      return;
    }
    let child: SpawnedChild;
    try {
      const ok = checkSpawn(this.#cfg, req);
      child = spawnChild(childSpec(ok, this.#worker), { uid: ok.user.uid, gid: ok.user.gid });
    } catch (err) {
      say(`refused: ${(err as Error).message}`);
      await this.#out.send(jsonFrame(T.REFUSED, f.channel, { error: (err as Error).message }));
      return;
    }
    const ch = { child, stdin: child.stdin.getWriter(), chain: Promise.resolve() };
    this.#channels.set(f.channel, ch);
    await this.#out.send(jsonFrame(T.SPAWNED, f.channel, { pid: child.pid }));
    void this.#relay(f.channel, child);
  }

  /** Writes in order, without holding up other channels; each STDIN frame is acknowledged. */
  #stdin(ch: Channel, f: Frame): void {
    ch.chain = ch.chain.then(async () => {
      try {
        if (f.type === T.STDIN) await ch.stdin.write(f.payload);
        else await ch.stdin.close();
      } catch { /* the child stopped reading: its exit status tells */ }
      if (f.type === T.STDIN) await this.#out.send(encodeFrame(T.STDIN_ACK, f.channel, EMPTY));
    });
  }

  /** Relays the child's stdout, then its exit status and stderr, and ends the channel. */
  async #relay(id: number, child: SpawnedChild): Promise<void> {
    const out = this.#out;
    try {
      for await (const chunk of child.stdout) {
        for (let at = 0; at < chunk.length; at += MAX_PAYLOAD) {
          await out.send(encodeFrame(T.STDOUT, id, chunk.subarray(at, at + MAX_PAYLOAD)));
        }
      }
    } catch { /* the child's stdout broke: its status tells */ }
    await out.send(encodeFrame(T.STDOUT_EOF, id, EMPTY)).catch(() => {});
    const st = await child.status;
    this.#channels.delete(id);
    await out.send(jsonFrame(T.EXIT, id, st)).catch(() => {});
  }

  async #reload(): Promise<void> {
    const src = this.#cfg.source;
    try {
      this.#cfg = await loadConfig(src.startsWith("(") ? undefined : src);
      await this.#out.send(jsonFrame(T.RELOADED, 0, { ok: true }));
    } catch (err) {
      await this.#out.send(jsonFrame(T.RELOADED, 0, { ok: false, error: (err as Error).message }));
    }
  }
}

/** Runs the helper until the manager closes its pipe; returns the exit code. */
export async function privhelperMain(cfg: Config): Promise<number> {
  const worker = selfCommand(["worker"]); // with this process's permissions, before revoking
  rememberDenoDir();
  await dropPermissions(["net", "write", "env"]);
  // A stop signal sent to the whole process group (Ctrl-C, systemd) is the manager's to
  // handle: the helper ends when the manager closes its pipe, after the manager's shutdown.
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) Deno.addSignalListener(sig, () => {});
  return await new HelperServer(cfg, worker).run();
}
