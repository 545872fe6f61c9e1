/**
 * Peak memory of `skiff serve` under a burst of parallel AUTH attempts
 * (issue 9, finding 5): N attempts at once (wrong passwords) from M
 * loopback addresses in different /24s (127.0.X.1), then the server's
 * VmHWM (peak RSS) from /proc. Run it once with the defaults and once with
 * the bounds lifted to see what they save:
 *
 *   ./scripts/deno run -A scripts/auth_rss.ts                       # defaults
 *   ./scripts/deno run -A scripts/auth_rss.ts --unbounded           # old behaviour
 *   ./scripts/deno run -A scripts/auth_rss.ts --attempts 90 --addresses 50
 *
 * A benchmark, not a test: it prints figures and asserts nothing.
 */
import * as net from "node:net";
import { hashPassword } from "../lib/auth/credentials.ts";
import { SkiffServer } from "../tests/harness.ts";

function arg(name: string, dflt: number): number {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : dflt;
}

const attempts = arg("attempts", 90);
const addresses = arg("addresses", 50);
const unbounded = Deno.args.includes("--unbounded");

function status(pid: number, key: string): number {
  const text = Deno.readTextFileSync(`/proc/${pid}/status`);
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** One AUTH PLAIN with a wrong password; resolves to the reply code. */
function attempt(port: number, localAddress: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress });
    let buf = "";
    let step = 0;
    s.setEncoding("latin1");
    s.on("error", () => resolve("error"));
    const timer = setTimeout(() => (s.destroy(), resolve("timeout")), 120_000);
    s.on("data", (d: string) => {
      buf += d;
      if (step === 0 && /^220 .*\r\n/m.test(buf)) {
        step = 1;
        s.write("EHLO bench\r\n");
      } else if (step === 1 && /^250 .*\r\n/m.test(buf)) {
        step = 2;
        buf = "";
        s.write(`AUTH PLAIN ${btoa("\0alice\0wrong")}\r\n`);
      } else if (step === 2 && buf.endsWith("\r\n")) {
        clearTimeout(timer);
        s.destroy();
        resolve(buf.slice(0, 3));
      }
    });
  });
}

const dir = await Deno.makeTempDir({ prefix: "skiff-authrss-" });
await Deno.writeTextFile(`${dir}/creds`, `alice:${await hashPassword("right")}\n`);
const server = await SkiffServer.start({
  dir,
  toml: `[auth]
credentials = "${dir}/creds"
${unbounded ? "max_failures = 1000\nconcurrent_checks = 1000" : ""}
[limits]
connections = 1000
connections_per_ip = 1000
`,
});
try {
  // The harness's listener has no SASL: add one by restarting with a sasl listener.
  await server.stop();
  const cfg = await Deno.readTextFile(server.configPath);
  await Deno.writeTextFile(
    server.configPath,
    cfg.replace('protocol = "smtp"', 'protocol = "smtp"\nauth = "sasl"\nauth_plaintext = true'),
  );
} catch (err) {
  await server.cleanup();
  throw err;
}
const child = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "--quiet",
    "-A",
    new URL("../main.ts", import.meta.url).pathname,
    "--config",
    server.configPath,
    "serve",
  ],
  cwd: dir,
  stdin: "null",
  stdout: "null",
  stderr: "null",
}).spawn();
try {
  for (let i = 0; i < 200; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: server.port })).close();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await new Promise((r) => setTimeout(r, 1000));
  const before = status(child.pid, "VmRSS");
  const t0 = Date.now();
  const codes = await Promise.all(
    Array.from(
      { length: attempts },
      (_, i) => attempt(server.port, `127.0.${i % addresses + 1}.1`),
    ),
  );
  const ms = Date.now() - t0;
  const peak = status(child.pid, "VmHWM");
  const tally: Record<string, number> = {};
  for (const c of codes) tally[c] = (tally[c] ?? 0) + 1;
  console.log(JSON.stringify({
    mode: unbounded ? "unbounded (max_failures = concurrent_checks = 1000)" : "defaults",
    attempts,
    addresses,
    rss_before_mb: Math.round(before),
    peak_rss_mb: Math.round(peak),
    replies: tally,
    elapsed_ms: ms,
  }));
} finally {
  child.kill("SIGTERM");
  await child.status;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
