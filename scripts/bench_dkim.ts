/**
 * How much DKIM signing costs per message, to decide where it happens:
 * signs N messages of SIZE bytes with a fresh RSA-2048 and Ed25519 key
 * through lib/mailauth/sign.ts and prints messages per second, and the
 * longest the event loop was stalled meanwhile (a 1 ms timer's worst lateness:
 * signing must not stall the other sessions).
 * Usage: deno run --allow-all scripts/bench_dkim.ts [N=2000] [SIZE=2048]
 */
import { signMessage } from "../lib/mailauth/sign.ts";
import { generateDkimKey } from "../lib/mailauth/keygen.ts";

const n = Number(Deno.args[0] ?? 2000);
const size = Number(Deno.args[1] ?? 2048);
const dir = await Deno.makeTempDir();
const head = "From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\n" +
  "Date: Wed, 2 Dec 2026 14:00:00 +0000\r\nMessage-ID: <b@example.org>\r\n\r\n";
const line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
const body = line.repeat(Math.max(1, Math.ceil((size - head.length) / line.length)));
const message = new TextEncoder().encode(head + body);
try {
  for (const type of ["rsa", "ed25519"] as const) {
    const key = `${dir}/${type}.pem`;
    await Deno.writeTextFile(key, generateDkimKey(type).privatePem);
    const algorithm = type === "rsa" ? "rsa-sha256" : "ed25519-sha256";
    const keys = [{ domain: "example.org", selector: "s", key, algorithm }] as const;
    await signMessage(message, { keys: [...keys], now: Date.now() }); // warm up, load the key
    let last = performance.now();
    let stall = 0;
    const timer = setInterval(() => {
      const now = performance.now();
      stall = Math.max(stall, now - last);
      last = now;
    }, 1);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await signMessage(message, { keys: [...keys], now: Date.now() });
    const ms = performance.now() - t0;
    clearInterval(timer);
    stall = Math.max(stall, performance.now() - last);
    console.log(
      `${algorithm}: ${n} messages of ${message.length} bytes in ${ms.toFixed(0)} ms = ` +
        `${(n / ms * 1000).toFixed(0)} msg/s, ${(ms / n).toFixed(3)} ms each, ` +
        `event loop stalled at most ${stall.toFixed(1)} ms`,
    );
  }
} finally {
  await Deno.remove(dir, { recursive: true });
}
