/**
 * Program destinations (the seed's case for the connection cache): a local
 * delivery agent that speaks LMTP on its stdin and stdout (RFC 2033), such
 * as Dovecot's `lmtp` run standalone. The queue manager starts it once,
 * keeps its session open while messages keep coming (one transaction at a
 * time per program), restarts it when it has died, and ends it after the
 * cache idle time. The program is started from an argv list, never a shell,
 * as the configured uid and gid, through the manager's spawner (directly, or
 * by the privileged helper once the manager runs as `user`); its stderr is
 * captured, bounded, and logged when it exits.
 */
import type { RunAs } from "../route/types.ts";
import { endResults, type OutgoingMessage, type SendResult } from "../smtp/client.ts";
import { PipeWire } from "../smtp/client_conn.ts";
import { SessionEnd, SmtpSession } from "../smtp/client_session.ts";
import { DirectSpawner, type SpawnedChild, type Spawner } from "../sys/spawn.ts";
import { logWarn } from "../log/log.ts";

interface Running {
  child: SpawnedChild;
  session: SmtpSession;
  exited: boolean;
}

interface Slot {
  running: Running | null;
  queue: Promise<unknown>;
  timer?: ReturnType<typeof setTimeout>;
  starts: number;
}

/** Options shared by every program. */
export interface ProgramOptions {
  helo: string;
  replyTimeoutMs: number;
  idleMs: number;
  /** Who starts the programs (default: directly from this process). */
  spawner?: Spawner;
}

/** Long-running LMTP programs by command line and user. */
export class ProgramPool {
  #slots = new Map<string, Slot>();
  #opts: ProgramOptions;

  constructor(opts: ProgramOptions) {
    this.#opts = opts;
  }

  /** How many times the program for (command, user) was started (tests). */
  starts(command: string[], user: RunAs | null): number {
    return this.#slots.get(key(command, user))?.starts ?? 0;
  }

  /** The pid of the running program, if any (tests). */
  pid(command: string[], user: RunAs | null): number | null {
    const r = this.#slots.get(key(command, user))?.running;
    return r && !r.exited ? r.child.pid : null;
  }

  /** Delivers msg through the program; never throws for delivery trouble. */
  deliver(command: string[], user: RunAs | null, msg: OutgoingMessage): Promise<SendResult> {
    const k = key(command, user);
    let slot = this.#slots.get(k);
    if (!slot) {
      slot = { running: null, queue: Promise.resolve(), starts: 0 };
      this.#slots.set(k, slot);
    }
    const s = slot;
    const run = s.queue.then(() => this.#deliver(s, command, user, msg));
    s.queue = run.catch(() => {});
    return run;
  }

  async #deliver(
    slot: Slot,
    command: string[],
    user: RunAs | null,
    msg: OutgoingMessage,
  ): Promise<SendResult> {
    clearTimeout(slot.timer);
    const relay = `program:${command[0]}`;
    // A program that died (or whose session broke) is restarted, once per delivery.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!slot.running || slot.running.exited || !slot.running.session.healthy) {
        this.#stop(slot);
        try {
          slot.running = await this.#start(command, user, relay);
          slot.starts++;
        } catch (err) {
          if (!(err instanceof SessionEnd)) throw err;
          return { relay, recipients: endResults(msg, err) };
        }
      }
      const result = await slot.running.session.send(msg);
      if (result.tryNext && attempt === 0 && !slot.running.session.healthy) continue;
      if (!result.reusable) this.#stop(slot);
      else if (!(await slot.running.session.probe())) this.#stop(slot);
      slot.timer = setTimeout(() => this.#stop(slot), this.#opts.idleMs);
      Deno.unrefTimer(slot.timer as unknown as number);
      return { relay, recipients: result.recipients };
    }
    return {
      relay,
      recipients: endResults(
        msg,
        new SessionEnd({
          outcome: "deferred",
          code: 0,
          dsn: "4.3.0",
          text: `Program ${command[0]} keeps failing`,
          usable: false,
        }),
      ),
    };
  }

  async #start(command: string[], user: RunAs | null, relay: string): Promise<Running> {
    let child: SpawnedChild;
    try {
      const spawner = this.#opts.spawner ?? new DirectSpawner();
      child = await spawner.spawn({ kind: "program", argv: command, user });
    } catch (err) {
      throw new SessionEnd({
        outcome: "deferred",
        code: 0,
        dsn: "4.3.0",
        text: `Cannot start ${command[0]}: ${(err as Error).message}`,
        usable: false,
      });
    }
    const running = { child, exited: false } as Running;
    child.status.then((st) => {
      running.exited = true;
      if (st.code !== 0 || st.signal || st.stderr) {
        logWarn("program exited", {
          relay,
          status: st.signal ?? st.code,
          stderr: st.stderr || undefined,
        });
      }
    });
    const wire = new PipeWire(child.stdout, child.stdin, {
      name: relay,
      onDestroy: () => child.kill("SIGTERM"),
    });
    running.session = await SmtpSession.open(wire, {
      helo: this.#opts.helo,
      lmtp: true,
      tls: "none",
      replyTimeoutMs: this.#opts.replyTimeoutMs,
      relay,
    });
    return running;
  }

  #stop(slot: Slot): void {
    clearTimeout(slot.timer);
    const r = slot.running;
    slot.running = null;
    if (!r) return;
    void r.session.quit().finally(() => r.child.kill("SIGTERM"));
  }

  /** Ends every program. */
  async close(): Promise<void> {
    const all = [...this.#slots.values()];
    for (const s of all) {
      await s.queue;
      const r = s.running;
      this.#stop(s);
      if (r) await r.child.status.catch(() => {});
    }
  }
}

function key(command: string[], user: RunAs | null): string {
  return JSON.stringify([command, user?.uid ?? null, user?.gid ?? null]);
}
