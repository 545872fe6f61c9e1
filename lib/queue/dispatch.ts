/**
 * One delivery pass over one message: expire it when too old, fail it when
 * it loops (too many Received headers), route each due recipient, deliver
 * every destination group at once (network destinations in the event loop
 * through the connection cache and per-destination limits, local mailboxes
 * and pipes in worker children as the recipient's uid/gid), append each
 * group's results to the journal as they arrive, then send the bounce or
 * delay warning the results call for (notify.ts). A remote server's reply
 * after the content is journaled the moment it is read (onResults), through
 * a journal opened before delivery starts: a kill -9 between the peer's 250
 * and that write means the message goes out again (docs/reliability.md).
 */
import type { Config } from "../config/types.ts";
import { delaySeconds, logEvent, logWarn } from "../log/log.ts";
import type { AliasTable } from "../route/aliases.ts";
import { fixedRoute } from "../route/fixed.ts";
import {
  encodeSpecial,
  forwardExpansion,
  PROTOCOL_ALIAS,
  route,
  type Routed,
} from "../route/router.ts";
import { safeReadTextSync } from "../sys/safe_open.ts";
import type { Destination } from "../config/route_types.ts";
import type { OutgoingMessage, RecipientResult, SendResult } from "../smtp/client.ts";
import { JournalWriter } from "../spool/journal_writer.ts";
import {
  applyRecords,
  type JournalRecord,
  type MessageState,
  type RecipientState,
} from "../spool/records.ts";
import type { Spool } from "../spool/spool.ts";
import type { DeliveryJob, JobResult, JobTarget, WorkerReport } from "../worker/protocol.ts";
import { type RunOptions, WorkerError } from "../worker/run_job.ts";
import {
  deliverNet,
  destinationKey,
  type NetContext,
  type NetDestination,
} from "../deliver/smtp.ts";
import type { ProgramPool } from "../deliver/program.ts";
import { countReceived, headerOf } from "./bounce.ts";
import type { DestinationLimiter } from "./limits.ts";
import { notify } from "./notify.ts";
import { retryDelayMs } from "./retry.ts";
import { metrics } from "../metrics/metrics.ts";

/** What a delivery pass needs from the manager. */
export interface DispatchDeps {
  cfg: Config;
  spool: Spool;
  now: () => number;
  net: NetContext;
  limiter: DestinationLimiter;
  programs: ProgramPool;
  aliases: () => AliasTable;
  runJob: (job: DeliveryJob, opts: Omit<RunOptions, "timeoutMs">) => Promise<WorkerReport>;
  /** Whether children can run as other uids (root, or the privileged helper is there). */
  switchesUsers: () => boolean;
  /** Test seam replacing all network delivery. */
  relay?: (state: MessageState, rcpts: RecipientState[]) => Promise<SendResult>;
  /** Queues a message skiff made (bounce, alias expansion). */
  enqueue: (id: string) => void;
}

type Due = { r: RecipientState; routed: Routed };

/** Runs one pass; returns the message's state afterwards. */
export async function dispatch(
  deps: DispatchDeps,
  id: string,
  forced: boolean,
): Promise<MessageState> {
  const loaded = await deps.spool.loadWithContent(id);
  let state = loaded.state;
  if (!state.done) state = await expire(deps, state);
  const now = deps.now();
  const due = state.recipients.filter((r) =>
    (r.status === "pending" || r.status === "deferred") && (forced || r.nextAttempt <= now)
  );
  // What this pass journaled: the state after it is the state before with these applied,
  // with no second read of the file this pass is the only writer of.
  let written: JournalRecord[] = [];
  if (due.length > 0) {
    const records: Promise<void>[] = [];
    // Opened before any delivery starts, so that none of the open's file-system
    // calls falls between a peer's 250 and the write of its record.
    await using appender = await Appender.open(deps, state);
    const head = await readHead(deps, state, loaded.content);
    if (countReceived(headerOf(head.first)) > deps.cfg.delivery.maxReceived) {
      await appender.add(due.map((r) => ({
        t: "failed",
        rcpt: r.index,
        at: now,
        dsn: "5.4.6",
        text: `Mail loop: more than ${deps.cfg.delivery.maxReceived} Received headers`,
      })));
    } else {
      const ctx = {
        aliases: deps.aliases(),
        readFile: readSmall,
        root: deps.switchesUsers(),
      };
      // A listener with a fixed destination overrides the routing table.
      const fixed = state.envelope.params?.destination;
      const routed: Due[] = due.map((r) => ({
        r,
        routed: fixedRoute(deps.cfg, fixed, r.address) ??
          route(deps.cfg, ctx, r.address, state.envelope.protocol),
      }));
      for (const group of groupDue(routed)) {
        records.push(runGroup(deps, state, group, appender, head.whole));
      }
      await Promise.all(records);
    }
    written = appender.written;
  }
  state = applyRecords(state, written);
  return await notify(deps, state);
}

/**
 * The one appender of a message during a pass. Each add() is written at
 * once through a JournalWriter opened for the pass (writes keep call order,
 * fdatasyncs are coalesced) and logged, in order, once durable.
 */
class Appender {
  #chain: Promise<void> = Promise.resolve();
  /** Recipients whose result a server's reply settled this pass (settle()). */
  #settled = new Set<number>();
  /** Records written (and durable) so far, in the order they were written. */
  readonly written: JournalRecord[] = [];
  private constructor(private state: MessageState, private writer: JournalWriter) {}

  /** Opens the message's journal for the pass; closed at the end of the `await using` scope. */
  static async open(deps: DispatchDeps, state: MessageState): Promise<Appender> {
    const id = state.envelope.id;
    const writer = await JournalWriter.open(deps.spool.path(id), id, deps.spool.sharedDataSync());
    return new Appender(state, writer);
  }

  /** Journals records; a result for a recipient settle() already journaled is dropped. */
  add(records: JournalRecord[]): Promise<void> {
    records = records.filter((r) => !("rcpt" in r && this.#settled.has(r.rcpt)));
    if (records.length === 0) return Promise.resolve();
    const written = this.writer.append(records);
    written.catch(() => {}); // observed below, perhaps after it settles
    const run = this.#chain.then(async () => {
      await written;
      this.written.push(...records);
      for (const r of records) logResult(this.state, r);
      for (const r of records) metrics.result(this.state, r);
    });
    this.#chain = run.catch(() => {});
    return run;
  }

  /**
   * Journals the results a server's reply settled, the moment it is read;
   * the same results coming back at the end of the session are then
   * dropped by add(). Never rejects: a failed write is logged and the
   * recipient, left without a record, is tried again on a later pass.
   */
  settle(records: JournalRecord[]): void {
    const run = this.add(records);
    for (const r of records) if ("rcpt" in r) this.#settled.add(r.rcpt);
    run.catch((err) =>
      logWarn("journal write failed", { id: this.state.envelope.id, error: String(err) })
    );
  }

  /** Waits for the pending writes, then closes the journal. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#chain;
    await this.writer.close();
  }
}

/** Logs one result record in the mail-log form. */
export function logResult(state: MessageState, rec: JournalRecord): void {
  if (rec.t === "envelope" || rec.t === "notified") return;
  const rcpt = state.recipients[rec.rcpt];
  logEvent(rec.t, {
    id: state.envelope.id,
    to: `<${rcpt?.address ?? "?"}>`,
    relay: "relay" in rec ? rec.relay ?? "none" : "none",
    delay: delaySeconds(state.envelope.received, rec.at),
    dsn: rec.dsn,
    status: rec.t === "delivered" ? "sent" : rec.t === "deferred" ? "deferred" : "bounced",
    text: rec.text,
  });
}

/** A result record for a recipient; a temporary one carries the next attempt time. */
export function resultRecord(
  deps: { cfg: Config; now: () => number },
  r: RecipientState,
  res: { outcome: "delivered" | "deferred" | "failed"; dsn: string; text: string; code?: number },
  relay: string,
  hop?: "passed" | "relayed",
): JournalRecord {
  const at = deps.now();
  const text = res.code ? `${res.code} ${res.dsn} ${res.text}` : res.text;
  if (res.outcome === "delivered") {
    return {
      t: "delivered",
      rcpt: r.index,
      at,
      dsn: res.dsn,
      text,
      relay,
      ...(hop ? { hop } : {}),
    };
  }
  if (res.outcome === "failed") {
    return { t: "failed", rcpt: r.index, at, dsn: res.dsn, text, relay };
  }
  const until = at + retryDelayMs(r.attempts + 1, deps.cfg.queue);
  return { t: "deferred", rcpt: r.index, at, until, dsn: res.dsn, text, relay };
}

/** Fails every open recipient of a message older than the queue lifetime (RFC 3463 4.4.7). */
async function expire(deps: DispatchDeps, state: MessageState): Promise<MessageState> {
  const now = deps.now();
  const life = deps.cfg.queue.lifetime;
  if (now - state.envelope.received <= life * 1000) return state;
  const records: JournalRecord[] = state.recipients
    .filter((r) => r.status === "pending" || r.status === "deferred")
    .map((r) => ({
      t: "failed",
      rcpt: r.index,
      at: now,
      dsn: "4.4.7",
      text: `Message expired after ${life} s in the queue; last error: ${r.text ?? "none"}`,
    }));
  if (records.length === 0) return state;
  await using out = await Appender.open(deps, state);
  await out.add(records);
  return applyRecords(state, records);
}

/**
 * The content's first chunk, for the loop check (its Received headers), and
 * the whole content when that chunk is all of it (most mail): local jobs
 * then send it from memory rather than opening the spool file again. The
 * load's read usually held the content already (`loaded`); otherwise the
 * first chunk is read from the spool.
 */
async function readHead(
  deps: DispatchDeps,
  state: MessageState,
  loaded: Uint8Array | null,
): Promise<{ first: Uint8Array; whole: Uint8Array | null }> {
  let first = loaded;
  if (first === null) {
    const { stream } = await deps.spool.content(state.envelope.id);
    const reader = stream.getReader();
    first = (await reader.read()).value ?? new Uint8Array(0);
    await reader.cancel().catch(() => {});
  }
  return { first, whole: first.length === state.envelope.size ? first : null };
}

/**
 * Reads an :include: file of the aliases file (the administrator's): no
 * symlink followed, no FIFO blocked on, a regular file with one link owned
 * by root or skiff's user, not writable by others, at most 1 MiB.
 */
function readSmall(path: string): string | null {
  return safeReadTextSync(path, {
    limit: 1024 * 1024,
    owners: [0, Deno.uid() ?? 0],
    noOtherWrite: true,
  });
}

/** A set of recipients delivered together. */
interface Group {
  kind: "net" | "program" | "local" | "expand" | "now";
  key: string;
  items: Due[];
}

function groupDue(all: Due[]): Group[] {
  const groups = new Map<string, Group>();
  const put = (kind: Group["kind"], key: string, d: Due) => {
    const k = `${kind}|${key}`;
    const g = groups.get(k) ?? { kind, key, items: [] };
    g.items.push(d);
    groups.set(k, g);
  };
  for (const d of all) {
    const x = d.routed;
    if (x.type === "fail") put("now", "fail", d);
    else if (x.type === "expand") put("expand", d.r.address, d);
    else if (x.forward) put("local", JSON.stringify(x.runAs), d);
    else {
      const dest = x.destination;
      if (dest.kind === "discard" || dest.kind === "error") put("now", dest.kind, d);
      else if (dest.kind === "program") {
        put("program", JSON.stringify([dest.command, dest.user]), d);
      } else if (dest.kind === "mx" || dest.kind === "smtp" || dest.kind === "lmtp") {
        put("net", destinationKey(netDest(dest, x.domain)), d);
      } else put("local", JSON.stringify(x.runAs), d);
    }
  }
  return [...groups.values()];
}

/**
 * What became of a delivered recipient's DSN request (RFC 3461 §5.2.2):
 * a server offering DSN took it on ("passed"); an SMTP relay without DSN
 * is "relayed"; LMTP and programs are the final destination (undefined).
 */
function dsnHop(g: Group, dsn: boolean): "passed" | "relayed" | undefined {
  if (dsn) return "passed";
  if (g.kind !== "net") return undefined;
  const routed = g.items[0].routed;
  const kind = routed.type === "deliver" ? routed.destination.kind : "";
  return kind === "lmtp" ? undefined : "relayed";
}

function netDest(dest: Destination, domain: string): NetDestination {
  if (dest.kind === "mx") return { kind: "mx", domain, tls: dest.tls };
  return dest as NetDestination;
}

function outgoing(
  deps: DispatchDeps,
  state: MessageState,
  rcpts: RecipientState[],
): OutgoingMessage {
  const env = state.envelope;
  const p = env.params ?? {};
  return {
    from: env.from,
    recipients: rcpts.map((r) => r.address),
    size: env.size,
    content: async () => (await deps.spool.content(env.id)).stream,
    body8bit: p.BODY?.toUpperCase() === "8BITMIME",
    smtputf8: "SMTPUTF8" in p,
    ret: p.RET?.toUpperCase() === "HDRS"
      ? "HDRS"
      : p.RET?.toUpperCase() === "FULL"
      ? "FULL"
      : undefined,
    envid: p.ENVID,
    requireTls: "REQUIRETLS" in p,
    rcptParams: rcpts.map((r) => env.recipients[r.index]),
  };
}

async function runGroup(
  deps: DispatchDeps,
  state: MessageState,
  g: Group,
  out: Appender,
  whole: Uint8Array | null,
) {
  const rcpts = g.items.map((d) => d.r);
  const fromResults = (res: SendResult) =>
    out.add(
      res.recipients.map((x: RecipientResult, i) =>
        resultRecord(deps, rcpts[i], x, res.relay, dsnHop(g, res.dsn === true))
      ),
    );
  // What a reply after the content settles is journaled as soon as it is read,
  // with its DSN hop: add() drops the later copy from fromResults.
  const send = (msg: OutgoingMessage): OutgoingMessage => ({
    ...msg,
    onResults: (settled, relay, dsn) =>
      out.settle(
        settled.map((s) => resultRecord(deps, rcpts[s.index], s.result, relay, dsnHop(g, dsn))),
      ),
  });
  try {
    if (g.kind === "now") {
      return await out.add(g.items.map(({ r, routed }) => {
        if (routed.type === "fail") {
          return resultRecord(
            deps,
            r,
            { outcome: "failed", dsn: routed.dsn, text: routed.text },
            "local",
          );
        }
        const dest = (routed as { destination: Destination }).destination;
        if (dest.kind === "error") {
          const outcome = dest.dsn.startsWith("5") ? "failed" : "deferred";
          return resultRecord(deps, r, { outcome, dsn: dest.dsn, text: dest.text }, "error");
        }
        return resultRecord(
          deps,
          r,
          { outcome: "delivered", dsn: "2.0.0", text: "Discarded" },
          "discard",
        );
      }));
    }
    if (g.kind === "expand") return await expand(deps, state, g.items[0], out);
    const first = g.items[0].routed as Extract<Routed, { type: "deliver" }>;
    if (g.kind === "net") {
      if (deps.relay) return await fromResults(await deps.relay(state, rcpts));
      const release = await deps.limiter.acquire(g.key, first.concurrency, first.rate);
      try {
        const dest = netDest(first.destination, first.domain);
        return await fromResults(
          await deliverNet(dest, send(outgoing(deps, state, rcpts)), deps.net),
        );
      } finally {
        release();
      }
    }
    if (g.kind === "program") {
      const dest = first.destination as Extract<Destination, { kind: "program" }>;
      const release = await deps.limiter.acquire(g.key, 1, first.rate);
      try {
        return await fromResults(
          await deps.programs.deliver(dest.command, dest.user, send(outgoing(deps, state, rcpts))),
        );
      } finally {
        release();
      }
    }
    return await local(deps, state, g, out, whole);
  } catch (err) {
    // Unexpected trouble: defer the group (never lost).
    logWarn("delivery failed", { id: state.envelope.id, error: String(err) });
    await out.add(
      rcpts.map((r) =>
        resultRecord(deps, r, {
          outcome: "deferred",
          dsn: "4.3.0",
          text: `Delivery failed: ${err}`,
        }, "none")
      ),
    );
  }
}

/** Local mailboxes and pipes: one job per uid/gid, run by a pooled worker of that uid/gid. */
async function local(
  deps: DispatchDeps,
  state: MessageState,
  g: Group,
  out: Appender,
  whole: Uint8Array | null,
) {
  const targets: JobTarget[] = g.items.map(({ r, routed }) => {
    const x = routed as Extract<Routed, { type: "deliver" }>;
    return {
      rcpt: r.index,
      address: x.original ?? r.address,
      user: x.user || "unknown",
      destination: x.destination,
      ...(x.forward ? { forward: x.forward } : {}),
    };
  });
  const runAs = (g.items[0].routed as Extract<Routed, { type: "deliver" }>).runAs;
  const job: DeliveryJob = {
    v: 2,
    file: state.envelope.id,
    hostname: deps.cfg.hostname,
    sender: state.envelope.from,
    size: state.envelope.size,
    targets,
    log: deps.cfg.log,
  };
  // Switching uid/gid needs root or the helper; otherwise the child runs as skiff's own user
  // (docs/delivery.md): the spawner decides.
  const byIndex = new Map(g.items.map(({ r }) => [r.index, r]));
  try {
    const report = await deps.runJob(job, {
      content: async () =>
        whole ? ReadableStream.from([whole]) : (await deps.spool.content(state.envelope.id)).stream,
      user: deps.switchesUsers() ? runAs : null,
    });
    const known = report.results.filter((x) => byIndex.has(x.rcpt));
    await out.add(
      known.filter((x) => x.outcome !== "expand" && x.outcome !== "noforward").map((x) =>
        resultRecord(deps, byIndex.get(x.rcpt)!, x as JobResult & { outcome: "delivered" }, "local")
      ),
    );
    await forwarded(deps, state, { items: g.items, results: known, out });
    const missing = g.items.filter(({ r }) => !report.results.some((x) => x.rcpt === r.index));
    await out.add(
      missing.map(({ r }) =>
        resultRecord(
          deps,
          r,
          { outcome: "deferred", dsn: "4.3.0", text: "Worker gave no result" },
          "local",
        )
      ),
    );
  } catch (err) {
    // The whole cause (with the worker's stderr) on the message's log line; a short one
    // in the deferral text, which may end up in a delay notice to the sender.
    const e = err as WorkerError;
    logWarn("worker failed", {
      id: state.envelope.id,
      user: runAs?.name ?? "(skiff)",
      error: e.message ?? String(err),
      stderr: e.stderr || undefined,
    });
    const cause = e instanceof WorkerError ? e.message.slice(0, 200) : String(err).slice(0, 200);
    await out.add(
      g.items.map(({ r }) =>
        resultRecord(deps, r, {
          outcome: "deferred",
          dsn: "4.3.0",
          text: `Local delivery failed: ${cause}`,
        }, "local")
      ),
    );
  }
}

/**
 * What workers found in ~/.forward files: targets become an ALIAS message
 * (expanded here, as the forwarding user, with the manager's own checks);
 * "noforward" recipients are routed past .forward and delivered now.
 */
async function forwarded(
  deps: DispatchDeps,
  state: MessageState,
  o: { items: Due[]; results: JobResult[]; out: Appender },
) {
  const due = (x: JobResult) => o.items.find(({ r }) => r.index === x.rcpt)!;
  const again: Due[] = [];
  const root = deps.switchesUsers();
  const ctx = { aliases: deps.aliases(), readFile: readSmall, root, skipForward: true };
  for (const x of o.results) {
    const d = due(x);
    if (x.outcome === "noforward") {
      again.push({ r: d.r, routed: route(deps.cfg, ctx, d.r.address, state.envelope.protocol) });
    } else if (x.outcome === "expand" && x.targets) {
      const first = d.routed as Extract<Routed, { type: "deliver" }>;
      const routed = forwardExpansion(deps.cfg, {
        address: d.r.address,
        targets: x.targets,
        runAs: first.runAs,
        why: first.forward?.path ?? ".forward",
      });
      try {
        if (routed.type === "expand") await expand(deps, state, { r: d.r, routed }, o.out);
        else {
          await o.out.add([resultRecord(deps, d.r, {
            outcome: "failed",
            dsn: routed.type === "fail" ? routed.dsn : "5.4.6",
            text: routed.type === "fail" ? routed.text : "Bad .forward",
          }, "local")]);
        }
      } catch (err) {
        // Only this recipient is retried; the others' results are already recorded.
        await o.out.add([resultRecord(deps, d.r, {
          outcome: "deferred",
          dsn: "4.3.0",
          text: `Forwarding failed: ${(err as Error).message ?? err}`,
        }, "local")]);
      }
    }
  }
  await Promise.all(groupDue(again).map((g) => runGroup(deps, state, g, o.out, null)));
}

/**
 * Alias or .forward expansion: the targets become a new message (protocol
 * ALIAS, so they are not expanded again and may name commands and files),
 * and the original recipient is done.
 */
async function expand(deps: DispatchDeps, state: MessageState, d: Due, out: Appender) {
  const x = d.routed as Extract<Routed, { type: "expand" }>;
  const recipients = x.targets.map((t) => ({
    address: encodeSpecial(t, x.runAs, d.r.address),
  }));
  if (recipients.length === 0) {
    return await out.add([
      resultRecord(deps, d.r, {
        outcome: "delivered",
        dsn: "2.0.0",
        text: `Alias ${x.why} is empty`,
      }, "local"),
    ]);
  }
  const env = state.envelope;
  const { stream } = await deps.spool.content(env.id);
  const w = await deps.spool.begin();
  try {
    for await (const chunk of stream) await w.write(chunk);
    const spec = env.recipients[d.r.index];
    await w.commit({
      id: w.id,
      from: env.from,
      recipients: recipients.map((r) => ({
        ...r,
        ...(spec?.notify ? { notify: spec.notify } : {}),
      })),
      received: deps.now(),
      client: { address: "127.0.0.1", helo: deps.cfg.hostname },
      protocol: PROTOCOL_ALIAS,
      size: env.size,
      ...(env.params ? { params: env.params } : {}),
    });
  } catch (err) {
    await w.abort().catch(() => {});
    throw err;
  }
  deps.enqueue(w.id);
  await out.add([resultRecord(deps, d.r, {
    outcome: "delivered",
    dsn: "2.0.0",
    text: `Expanded by ${x.why} to ${recipients.length} recipient(s), queued as ${w.id}`,
  }, "local")]);
}
