/**
 * The manager's side of the privileged helper: starts `skiff privhelper`
 * (while still root, before switching to `user`) and then starts every
 * child through it (the Spawner of lib/sys/spawn.ts). Each child is a
 * channel on the helper's pipes: stdin is sent in frames of at most 64 KiB,
 * one unacknowledged frame per child at a time (so the helper never holds
 * more than that per child), stdout comes back as it arrives, and the exit
 * status with the start of the child's stderr ends the channel. If the helper
 * dies, every child it ran is reported failed and `onExit` is called: the
 * manager, which cannot start programs itself any more, shuts down.
 */
import type { Config } from "../config/types.ts";
import { logError } from "../log/log.ts";
import type { RunAs } from "../route/types.ts";
import { childEnv } from "../sys/child_env.ts";
import { closeOnExecAll } from "../sys/cloexec.ts";
import { userByUid } from "../sys/passwd.ts";
import type { ChildExit, SpawnedChild, Spawner, SpawnRequest } from "../sys/spawn.ts";
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

interface Pending {
  started: PromiseWithResolvers<number>;
  stdout: ReadableStreamDefaultController<Uint8Array> | null;
  exit: PromiseWithResolvers<ChildExit>;
  ack: PromiseWithResolvers<void> | null;
  /** The child has exited: further stdin writes fail as on a closed pipe. */
  done: boolean;
}

/** A running privileged helper. */
export class PrivHelper implements Spawner {
  readonly kind = "privhelper";
  readonly pid: number;
  #child: Deno.ChildProcess;
  #out: FrameWriter;
  #self: RunAs;
  #next = 1;
  #channels = new Map<number, Pending>();
  #reload: PromiseWithResolvers<Record<string, unknown>> | null = null;
  #dead: string | null = null;
  #exited: Promise<void>;
  onExit: (why: string) => void = () => {};

  private constructor(child: Deno.ChildProcess, self: RunAs) {
    this.#child = child;
    this.pid = child.pid;
    this.#self = self;
    this.#out = new FrameWriter(child.stdin);
    this.#exited = child.status.then(() => {});
  }

  /** Starts the helper with `cfg`'s file and waits until it is ready; throws with its cause. */
  static async start(cfg: Config): Promise<PrivHelper> {
    if (!cfg.user) throw new Error("The privileged helper needs `user`");
    const args = cfg.source.startsWith("(") ? [] : ["--config", cfg.source];
    const cmd = selfCommand([...args, "privhelper"]);
    closeOnExecAll();
    const child = new Deno.Command(cmd.command, {
      args: cmd.args,
      clearEnv: true,
      env: childEnv({ name: "root", home: "/root" }, { skiff: true }),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit", // its few messages join the manager's log stream
    }).spawn();
    const self = { name: cfg.user.name, uid: cfg.user.uid, gid: cfg.user.gid };
    const h = new PrivHelper(child, self);
    const ready = Promise.withResolvers<void>();
    h.#pump(ready);
    const timer = setTimeout(() => ready.reject(new Error("No answer within 30 s")), 30_000);
    try {
      await ready.promise;
    } catch (err) {
      h.#kill();
      throw new Error(`Privileged helper did not start: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    return h;
  }

  async #pump(ready: PromiseWithResolvers<void>): Promise<void> {
    let why = "it exited";
    try {
      for await (const f of readFrames(this.#child.stdout)) this.#handle(f, ready);
    } catch (err) {
      why = `protocol error: ${(err as Error).message}`;
    }
    const st = await this.#child.status;
    this.#dead = `Privileged helper ${why} (${st.signal ?? `exit code ${st.code}`})`;
    ready.reject(new Error(this.#dead));
    for (const p of this.#channels.values()) this.#fail(p, this.#dead);
    this.#channels.clear();
    this.#reload?.reject(new Error(this.#dead));
    this.onExit(this.#dead);
  }

  #fail(p: Pending, why: string): void {
    p.started.reject(new Error(why));
    try {
      p.stdout?.error(new Error(why));
    } catch { /* closed */ }
    p.done = true;
    p.ack?.reject(new Error(why));
    p.exit.resolve({ code: 255, signal: null, stderr: why });
  }

  #handle(f: Frame, ready: PromiseWithResolvers<void>): void {
    if (f.channel === 0) {
      if (f.type === T.READY) ready.resolve();
      else if (f.type === T.RELOADED) this.#reload?.resolve(jsonPayload(f));
      return;
    }
    const p = this.#channels.get(f.channel);
    if (!p) return;
    switch (f.type) {
      case T.SPAWNED:
        p.started.resolve(Number(jsonPayload(f).pid));
        break;
      case T.REFUSED:
        p.started.reject(new Error(`Privileged helper refused: ${jsonPayload(f).error}`));
        p.done = true;
        this.#channels.delete(f.channel);
        break;
      case T.STDOUT:
        p.stdout?.enqueue(f.payload);
        break;
      case T.STDOUT_EOF:
        try {
          p.stdout?.close();
        } catch { /* cancelled */ }
        break;
      case T.STDIN_ACK:
        p.ack?.resolve();
        break;
      case T.EXIT: {
        const e = jsonPayload(f);
        p.done = true;
        p.ack?.resolve(); // nothing more will be written
        p.exit.resolve({
          code: Number(e.code),
          signal: typeof e.signal === "string" ? e.signal : null,
          stderr: String(e.stderr ?? "").slice(0, 4096),
        });
        this.#channels.delete(f.channel);
        break;
      }
    }
  }

  /** Starts a child through the helper (see lib/sys/spawn.ts). */
  async spawn(req: SpawnRequest): Promise<SpawnedChild> {
    if (this.#dead) throw new Error(this.#dead);
    if (req.command) throw new Error("The privileged helper runs only skiff's own worker");
    const want = req.user ?? this.#self;
    // The helper matches the name against /etc/passwd: send the name of the uid.
    const user = { name: userByUid(want.uid)?.name ?? want.name, uid: want.uid, gid: want.gid };
    const id = this.#next++;
    const p: Pending = {
      started: Promise.withResolvers<number>(),
      stdout: null,
      exit: Promise.withResolvers<ChildExit>(),
      ack: null,
      done: false,
    };
    const stdout = new ReadableStream<Uint8Array>({
      start: (c) => {
        p.stdout = c;
      },
      cancel: () => {
        p.stdout = null;
      },
    });
    this.#channels.set(id, p);
    await this.#out.send(jsonFrame(T.SPAWN, id, { kind: req.kind, argv: req.argv, user }));
    const pid = await p.started.promise;
    const out = this.#out;
    const stdin = new WritableStream<Uint8Array>({
      async write(chunk) {
        for (let at = 0; at < chunk.length; at += MAX_PAYLOAD) {
          if (p.done) throw new Error("Broken pipe: the child has exited");
          p.ack = Promise.withResolvers<void>();
          await out.send(encodeFrame(T.STDIN, id, chunk.subarray(at, at + MAX_PAYLOAD)));
          await p.ack.promise;
        }
      },
      close: () => p.done ? undefined : out.send(encodeFrame(T.STDIN_EOF, id, new Uint8Array(0))),
      abort: () => out.send(jsonFrame(T.KILL, id, { signal: "SIGKILL" })).catch(() => {}),
    });
    return {
      pid,
      stdin,
      stdout,
      status: p.exit.promise,
      kill: (signal = "SIGKILL") => {
        if (this.#channels.has(id)) {
          void out.send(jsonFrame(T.KILL, id, { signal })).catch(() => {});
        }
      },
    };
  }

  /** Asks the helper to re-read its config (after the manager's reload). */
  async reload(): Promise<Record<string, unknown>> {
    if (this.#dead) throw new Error(this.#dead);
    this.#reload = Promise.withResolvers();
    await this.#out.send(jsonFrame(T.RELOAD, 0, {}));
    try {
      return await this.#reload.promise;
    } finally {
      this.#reload = null;
    }
  }

  #kill(): void {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
  }

  /** Closes the helper's stdin (it kills its children and exits) and waits. */
  async close(): Promise<void> {
    this.onExit = () => {};
    await this.#out.close();
    const t = setTimeout(() => this.#kill(), 5000);
    await this.#exited;
    clearTimeout(t);
  }
}

/** Logs the helper's death; the manager decides what follows. */
export function logHelperExit(why: string): void {
  logError("privileged helper exited", { error: why });
}
