/**
 * Crash torture: parallel SMTP senders submit messages with unique tokens
 * to a real `skiff serve`, which relays them to a token-recording sink,
 * while skiff's whole process group is killed with SIGKILL at random
 * moments and restarted on the same spool. At the end the senders stop,
 * the queue drains, and the tokens are counted: every token that got a 250
 * must reach the sink (lost = 0); extra copies are reported as duplicates.
 *
 *   deno task torture --kills 100 --senders 16
 *
 * Options: --kills N (10), --senders N (16), --min-ms / --max-ms (random
 * run time between kills, 300 / 2500), --backlog N (senders wait while
 * more than N messages are queued, 200), --drain-s (120), --keep (keep the
 * work directory), --json (figures as JSON only).
 *
 * The backlog bound keeps the run in a steady state: unbounded senders
 * outpace relaying on a loaded machine, the queue grows to thousands, and
 * every restart then spends its time rescanning instead of delivering.
 */
import { TokenSink } from "./token_sink.ts";
import {
  countFigures,
  sender,
  type SendTally,
  SkiffGroup,
  sleep,
  type TortureFigures,
} from "./torture_lib.ts";

/** Options of one torture run. */
export interface TortureOptions {
  kills: number;
  senders: number;
  /** Random run time between kills. */
  minMs?: number;
  maxMs?: number;
  /** Senders wait while more than this many messages are queued (default 200). */
  backlog?: number;
  /** Longest wait for the queue to drain at the end. */
  drainSeconds?: number;
  /** Keep the work directory (for a look at the log). */
  keep?: boolean;
  /** Progress lines (one per kill) go here. */
  progress?: (line: string) => void;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function queued(dir: string): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(`${dir}/spool/queue`)) if (e.isFile) n++;
  return n;
}

/** Runs the torture and returns its figures; the caller judges them. */
export async function runTorture(o: TortureOptions): Promise<TortureFigures> {
  const t0 = Date.now();
  const dir = await Deno.makeTempDir({ prefix: "skiff-torture-" });
  const sink = await TokenSink.start({ file: `${dir}/tokens` });
  const port = freePort();
  const config = `${dir}/skiff.toml`;
  const log = `${dir}/skiff.log`;
  await Deno.writeTextFile(
    config,
    `spool_dir = "${dir}/spool"
[[listener]]
address = "127.0.0.1:${port}"
protocol = "smtp"
[local]
domains = ["localhost"]
maildir_root = "${dir}/mail"
[queue]
retry_min = 1
retry_max = 2
[relay]
relayhost = "127.0.0.1:${sink.port}"
[delivery]
nameserver = "127.0.0.1:1"
`,
  );
  const tally: SendTally = { sent: new Set(), accepted: new Set() };
  let stopSenders = false;
  let skiff: SkiffGroup | null = null;
  let kills = 0;
  let left = -1;
  let backlog = 0;
  const monitor = setInterval(() => {
    queued(dir).then((n) => backlog = n).catch(() => {});
  }, 200);
  const maxBacklog = o.backlog ?? 200;
  try {
    skiff = await SkiffGroup.start(config, log);
    const senders = Array.from({ length: o.senders }, (_, i) =>
      sender({
        port,
        to: "far@example.com",
        prefix: `s${i}`,
        stop: () => stopSenders,
        hold: () => backlog > maxBacklog,
        tally,
      }));
    const minMs = o.minMs ?? 300;
    const maxMs = o.maxMs ?? 2500;
    for (kills = 0; kills < o.kills;) {
      await sleep(minMs + Math.random() * (maxMs - minMs));
      const at = Date.now();
      await skiff.kill();
      kills++;
      await Deno.writeTextFile(`${dir}/kills`, `${at}\n`, { append: true });
      o.progress?.(
        `kill ${kills}/${o.kills}: sent ${tally.sent.size} accepted ${tally.accepted.size}`,
      );
      skiff = await SkiffGroup.start(config, log, 120_000);
    }
    stopSenders = true;
    await Promise.all(senders);
    const deadline = Date.now() + (o.drainSeconds ?? 120) * 1000;
    while ((left = await queued(dir)) > 0 && Date.now() < deadline) await sleep(200);
    await skiff.stop();
    skiff = null;
    return countFigures(tally, await sink.tokens(), {
      kills,
      senders: o.senders,
      leftInQueue: left,
      seconds: Math.round((Date.now() - t0) / 1000),
    });
  } catch (e) {
    o.keep = true; // for a look at the log
    throw e;
  } finally {
    clearInterval(monitor);
    stopSenders = true;
    await skiff?.kill();
    await sink.stop();
    if (!o.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
    else o.progress?.(`work directory kept: ${dir}`);
  }
}

function numberArg(args: string[], name: string, dflt: number): number {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  if (!Number.isInteger(v) || v < 0) {
    throw new Error(`Option --${name} needs a whole number, got ${JSON.stringify(args[i + 1])}`);
  }
  return v;
}

if (import.meta.main) {
  const args = Deno.args;
  const json = args.includes("--json");
  const figures = await runTorture({
    kills: numberArg(args, "kills", 10),
    senders: numberArg(args, "senders", 16),
    minMs: numberArg(args, "min-ms", 300),
    maxMs: numberArg(args, "max-ms", 2500),
    drainSeconds: numberArg(args, "drain-s", 120),
    backlog: numberArg(args, "backlog", 200),
    keep: args.includes("--keep"),
    progress: json ? undefined : (l) => console.error(l),
  });
  const perKill = figures.kills > 0 ? (figures.duplicated / figures.kills).toFixed(2) : "-";
  if (json) console.log(JSON.stringify(figures));
  else {
    console.log(
      `kills=${figures.kills} senders=${figures.senders} sent=${figures.sent} ` +
        `accepted=${figures.accepted} delivered=${figures.delivered} ` +
        `duplicated=${figures.duplicated} (${perKill}/kill) lost=${figures.lost} ` +
        `delivered_unaccepted=${figures.deliveredUnaccepted} left_in_queue=${figures.leftInQueue} ` +
        `seconds=${figures.seconds}`,
    );
  }
  Deno.exit(figures.lost === 0 && figures.leftInQueue === 0 ? 0 : 1);
}
