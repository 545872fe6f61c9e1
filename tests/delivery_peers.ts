/**
 * Real peers for the delivery tests: dnsmasq serving test zones on a
 * loopback port (every answer points at 127.x), and the scripted aiosmtpd
 * server (tests/fixtures/scripted_smtp.py) that answers per recipient and
 * counts connections. Plus a helper that spools a message.
 */
import * as dgram from "node:dgram";
import { freePort, guardDns, sleep } from "./harness.ts";
import { parseConfig } from "../lib/config/load.ts";
import type { Config } from "../lib/config/types.ts";
import type { Envelope } from "../lib/spool/records.ts";
import { Spool } from "../lib/spool/spool.ts";

const SCRIPT = new URL("./fixtures/scripted_smtp.py", import.meta.url).pathname;

/** A running child process with a cleanup. */
export interface Running {
  port: number;
  dir: string;
  stop(): Promise<void>;
}

/** A name every test dnsmasq serves, so readiness is proven by an answer only ours can give. */
const READY_NAME = "dnsmasq-ready.skiff.test";

/**
 * dnsmasq on 127.0.0.1:port with the given extra arguments (--mx-host=...,
 * --host-record=...). dnsmasq binds TCP as well as UDP on its port, and the
 * port can be taken between choosing it and dnsmasq's bind (an ephemeral
 * client port of any process): then dnsmasq exits at once ("Address already
 * in use") while whatever holds the port may still answer. So it is ready
 * only when it answers READY_NAME, and a dnsmasq that exited is started
 * again on another port.
 */
export async function startDnsmasq(records: string[]): Promise<Running> {
  const why: string[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const started = await tryDnsmasq(records);
    if ("port" in started) return started;
    why.push(started.error);
  }
  throw new Error(`dnsmasq did not start: ${why.join("; ")}`);
}

async function tryDnsmasq(records: string[]): Promise<Running | { error: string }> {
  const port = await freeUdpPort();
  const child = new Deno.Command("/usr/sbin/dnsmasq", {
    args: [
      "--keep-in-foreground",
      `--port=${port}`,
      "--listen-address=127.0.0.1",
      "--bind-interfaces",
      "--no-resolv",
      "--no-hosts",
      "--no-daemon",
      `--host-record=${READY_NAME},127.0.0.1`,
      ...(Deno.uid() === 0 ? ["-u", "nobody"] : []),
      ...records,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  let exited = false;
  output.then(() => exited = true, () => exited = true);
  const stderr = async () =>
    new TextDecoder().decode((await output).stderr).trim().split("\n").at(-1) ?? "";
  let ready = false;
  for (let i = 0; i < 100 && !ready && !exited; i++) {
    try {
      const a = await Deno.resolveDns(READY_NAME, "A", {
        nameServer: { ipAddr: "127.0.0.1", port },
        signal: AbortSignal.timeout(500),
      });
      ready = a.includes("127.0.0.1");
    } catch { /* not up yet */ }
    if (!ready && !exited) await sleep(50);
  }
  if (!ready) {
    if (!exited) child.kill("SIGKILL");
    return { error: `port ${port}: ${exited ? await stderr() : "no answer"}` };
  }
  const dir = await Deno.makeTempDir({ prefix: "skiff-dns-" });
  return {
    port,
    dir,
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await output;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

async function freeUdpPort(): Promise<number> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((r) => sock.bind(0, "127.0.0.1", () => r()));
  const port = sock.address().port;
  await new Promise<void>((r) => sock.close(() => r()));
  return port;
}

/** The scripted SMTP server on host:port (port chosen when omitted); host may be "::1". */
export async function startScripted(host = "127.0.0.1", port?: number): Promise<
  Running & {
    counts(): Promise<{ connections: number; messages: number }>;
    messages(): Promise<string[]>;
  }
> {
  port ??= await freePort();
  const dir = await Deno.makeTempDir({ prefix: "skiff-scripted-" });
  const child = new Deno.Command("/usr/bin/python3", {
    args: [SCRIPT, host, String(port), dir],
    stdin: "null",
    stdout: "null",
    stderr: Deno.env.get("SKIFF_TEST_LOG") ? "inherit" : "null",
  }).spawn();
  const deadline = Date.now() + 10_000;
  while (!(await Deno.stat(`${dir}/ready`).catch(() => null))) {
    if (Date.now() > deadline) throw new Error("scripted SMTP server did not start");
    await sleep(30);
  }
  return {
    port,
    dir,
    counts: async () => {
      const [c, m] = (await Deno.readTextFile(`${dir}/counts`)).trim().split(" ").map(Number);
      return { connections: c, messages: m };
    },
    messages: async () => {
      const out: string[] = [];
      for await (const e of Deno.readDir(dir)) {
        if (e.name.startsWith("msg-")) out.push(await Deno.readTextFile(`${dir}/${e.name}`));
      }
      return out;
    },
    stop: async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A config for manager-level tests in dir; `toml` is appended. */
export function testConfig(dir: string, toml: string): Config {
  return parseConfig(
    `hostname = "skiff.test"\nspool_dir = "${dir}/spool"\n[local]\nmaildir_root = "${dir}/mail"\n` +
      `domains = ["localhost"]\n[queue]\nretry_min = 60\nretry_max = 600\n${guardDns(toml)}`,
    "test.toml",
  );
}

/** Spools one message; returns its id. */
export async function spoolMessage(
  spool: Spool,
  env: Partial<Envelope> & { from: string; to: string[] },
  body = "Subject: test\r\n\r\nhello\r\n",
  now = Date.now(),
): Promise<string> {
  const w = await spool.begin();
  const bytes = new TextEncoder().encode(body);
  await w.write(bytes);
  await w.commit({
    id: w.id,
    from: env.from,
    recipients: env.to.map((address) => ({ address })),
    received: now,
    client: { address: "127.0.0.1", helo: "test" },
    protocol: env.protocol ?? "ESMTP",
    size: bytes.length,
    ...(env.params ? { params: env.params } : {}),
  });
  return w.id;
}
