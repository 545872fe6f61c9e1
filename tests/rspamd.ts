/**
 * A private rspamd for milter tests: its proxy worker in milter mode with
 * self-scan, on a loopback port, from a minimal config written here (no
 * Lua modules, so it never looks up a name through the system resolver;
 * its own DNS points at a closed loopback port). GTUBE makes it reject;
 * every other message gets its "add header" action, which rspamd's milter
 * carries out as an X-Spam header. Loading takes long (rspamd compiles
 * its TLD list at start): up to a few minutes on a busy 2-core machine.
 */
import { freePort } from "./harness.ts";
import { waitListening } from "./run_cmd.ts";

/** The GTUBE line rspamd rejects on. */
export const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/** A running rspamd milter. */
export interface Rspamd {
  port: number;
  stop(): Promise<void>;
}

/** Starts rspamd and waits until its milter port accepts connections. */
export async function startRspamd(bin: string, timeoutMs = 300_000): Promise<Rspamd> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-rspamd-" });
  for (const d of ["run", "db", "log"]) {
    await Deno.mkdir(`${dir}/${d}`);
    await Deno.chmod(`${dir}/${d}`, 0o777);
  }
  await Deno.chmod(dir, 0o755);
  const port = await freePort();
  await Deno.writeTextFile(
    `${dir}/rspamd.conf`,
    `options {
  pidfile = "$RUNDIR/rspamd.pid";
  dns { nameserver = ["127.0.0.1:1"]; timeout = 1s; retransmits = 1; }
  gtube_patterns = "all";
  disable_hyperscan = true;
}
logging { type = "console"; level = "warning"; }
actions { reject = 15; add_header = -100; }
worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:${port}";
  milter = yes;
  timeout = 60s;
  count = 1;
  spam_header = "X-Spam";
  upstream "local" { default = yes; self_scan = yes; }
}
`,
  );
  const user = Deno.uid() === 0 ? ["-u", "_rspamd", "-g", "_rspamd"] : [];
  const child = new Deno.Command(bin, {
    args: [
      "-f",
      "-i",
      ...user,
      "-c",
      `${dir}/rspamd.conf`,
      `--var=RUNDIR=${dir}/run`,
      `--var=DBDIR=${dir}/db`,
      `--var=LOGDIR=${dir}/log`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const pump = (async () => {
    for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) {
      log = (log + c).slice(-4000);
    }
  })();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await child.status;
    clearTimeout(timer);
    await pump.catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitListening(port, timeoutMs, { what: "rspamd", everyMs: 250 });
  } catch {
    await stop();
    throw new Error(`rspamd did not listen within ${timeoutMs} ms: ${log}`);
  }
  return { port, stop };
}
