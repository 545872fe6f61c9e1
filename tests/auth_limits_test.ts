/**
 * AUTH limits hold under parallel attempts (issue 9, finding 5): attempts
 * are counted before the password hash, per IPv4 /24 and IPv6 /64, and the
 * hashes running at once are bounded globally. A real listener on loopback
 * with real sockets; the credentials' verify is wrapped (a test seam) to
 * count the checks that reach it and to hold them, so overlap is certain
 * without any timing assumption.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { Credentials, hashPassword, throttleKey } from "../lib/auth/credentials.ts";
import { AuthThrottle, HashGate } from "../lib/auth/credentials.ts";
import { parseConfig } from "../lib/config/load.ts";
import { startSmtpListener } from "../lib/listen/smtp_listener.ts";
import { Spool } from "../lib/spool/spool.ts";

/** Credentials whose checks are counted and held until `open()`. */
class HeldCredentials extends Credentials {
  calls = 0;
  running = 0;
  peak = 0;
  #gate: Promise<void>;
  open!: () => void;
  constructor(text: string) {
    super(text);
    this.#gate = new Promise((r) => this.open = r);
  }
  override async verify(user: string, password: string): Promise<boolean> {
    this.calls++;
    this.running++;
    this.peak = Math.max(this.peak, this.running);
    try {
      await this.#gate;
      return await super.verify(user, password);
    } finally {
      this.running--;
    }
  }
}

/** One AUTH PLAIN attempt from `localAddress`; resolves to the final reply line. */
function tryAuth(port: number, localAddress: string, password: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress });
    let buf = "";
    let step = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`No AUTH answer from ${localAddress}: ${JSON.stringify(buf)}`));
    }, 30_000);
    s.setEncoding("latin1");
    s.on("error", reject);
    s.on("data", (d: string) => {
      buf += d;
      if (step === 0 && /^220 .*\r\n/m.test(buf)) {
        step = 1;
        s.write("EHLO t\r\n");
      } else if (step === 1 && /^250 .*\r\n/m.test(buf)) {
        step = 2;
        buf = "";
        s.write(`AUTH PLAIN ${btoa(`\0alice\0${password}`)}\r\n`);
      } else if (step === 2 && /\r\n$/.test(buf)) {
        clearTimeout(timer);
        s.end("QUIT\r\n");
        resolve(buf.trim());
      }
    });
  });
}

async function withListener(
  opts: { maxFailures: number; checks: number },
  fn: (port: number, creds: HeldCredentials) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-authlim-" });
  const cfg = parseConfig(
    `spool_dir = "${dir}/spool"
[[listener]]
address = "127.0.0.1:1"
auth = "sasl"
auth_plaintext = true
[auth]
max_failures = ${opts.maxFailures}
concurrent_checks = ${opts.checks}
[limits]
connections_per_ip = 100
[log]
level = "error"`,
    "auth-limits",
    { cwd: dir },
  );
  const spool = new Spool(cfg.spoolDir);
  await spool.init();
  const creds = new HeldCredentials(
    `alice:${await hashPassword("right", { N: 1024, r: 8, p: 1 })}\n`,
  );
  const listener = await startSmtpListener(
    { ...cfg.listeners[0], address: { kind: "tcp", host: "127.0.0.1", port: 0 } },
    {
      config: cfg,
      spool,
      onQueued: () => {},
      sasl: {
        credentials: () => creds,
        throttle: new AuthThrottle(cfg.auth.maxFailures, cfg.auth.failureWindow),
        gate: new HashGate(cfg.auth.concurrentChecks),
      },
    },
  );
  try {
    await fn(Number(listener.address.split(":").pop()), creds);
  } finally {
    creds.open();
    await listener.close(1000);
    await Deno.remove(dir, { recursive: true });
  }
}

/** Waits (bounded) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 600 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

Deno.test("20 parallel wrong AUTH attempts from one address: at most max_failures reach the password check", async () => {
  await withListener({ maxFailures: 5, checks: 100 }, async (port, creds) => {
    const answers = Array.from({ length: 20 }, () => tryAuth(port, "127.0.0.1", "wrong"));
    // Hold the checks until every session had its chance to start one.
    await until(() => creds.calls >= 5, "five checks to start");
    await new Promise((r) => setTimeout(r, 300));
    creds.open();
    const replies = await Promise.all(answers);
    assert.equal(creds.calls, 5, `checks that ran: ${creds.calls}`);
    assert.equal(replies.filter((r) => r.startsWith("535 5.7.8")).length, 5, replies.join("\n"));
    assert.equal(replies.filter((r) => r.startsWith("454 4.7.0")).length, 15, replies.join("\n"));
    // A neighbour in the same /24 is refused too; the right password now waits its turn.
    assert.match(await tryAuth(port, "127.0.0.77", "right"), /^454 4\.7\.0/);
  });
});

Deno.test("password checks running at once are bounded by auth.concurrent_checks; the rest get 454 at once", async () => {
  await withListener({ maxFailures: 5, checks: 2 }, async (port, creds) => {
    // Twelve clients from twelve different /24s: the per-network limit does not apply.
    const answers = Array.from(
      { length: 12 },
      (_, i) => tryAuth(port, `127.0.${i + 1}.1`, i === 0 ? "right" : "wrong"),
    );
    await until(() => creds.running === 2, "two checks in flight");
    // While two hashes are held, the other ten are answered without hashing.
    const settled: string[] = [];
    answers.forEach((p) => p.then((r) => settled.push(r), () => {}));
    await until(() => settled.length === 10, "ten refusals");
    assert.ok(settled.every((r) => /^454 4\.7\.0 .*in progress/.test(r)), settled.join("\n"));
    creds.open();
    await Promise.all(answers);
    assert.equal(creds.peak, 2);
    assert.equal(creds.calls, 2);
  });
});

Deno.test("AUTH attempts are counted per IPv4 /24 and IPv6 /64", () => {
  const table: [string, string][] = [
    ["192.0.2.7", "192.0.2.0/24"],
    ["192.0.2.250", "192.0.2.0/24"],
    ["::ffff:192.0.2.9", "192.0.2.0/24"],
    ["2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"],
    ["2001:0db8:0001:0002:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["unix:uid=1000,pid=5", "unix:uid=1000,pid=5"],
  ];
  for (const [ip, key] of table) assert.equal(throttleKey(ip), key, ip);
  const t = new AuthThrottle(2, 60);
  const a = t.begin("198.51.100.1")!;
  const b = t.begin("198.51.100.2")!;
  assert.equal(t.begin("198.51.100.3"), null, "two in flight use up the /24's limit");
  assert.ok(t.begin("198.51.101.1"), "another /24 is not affected");
  a.release(); // a success stops counting
  assert.ok(t.begin("198.51.100.4"));
  b.fail();
});
