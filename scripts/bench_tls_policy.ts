/**
 * Cost of the outbound TLS policy per MX delivery (lib/tlspolicy/policy.ts
 * apply()): MTA-STS TXT lookup and DANE MX/TLSA queries against a loopback
 * DNS stub, for a domain with neither. Run: ./scripts/deno run -A scripts/bench_tls_policy.ts
 */
import { dnsStub } from "../tests/tls_policy_peers.ts";
import { TlsPolicy } from "../lib/tlspolicy/policy.ts";
const dns = await dnsStub({
  mx: { "x.test": "mx.x.test" },
  a: { "mx.x.test": "127.0.0.2" },
  insecure: ["x.test"],
});
const dir = await Deno.makeTempDir({ prefix: "skiff-bench-tlspol-" });
for (const dane of ["off", "on"] as const) {
  const p = new TlsPolicy({
    config: { mtaSts: "on", mtaStsCaFile: "", dane, tlsRpt: "off", tlsRptDir: "" },
    resolver: { nameserver: { host: "127.0.0.1", port: dns.port }, timeoutMs: 2000 },
    spoolDir: dir,
    hostname: "h",
  });
  const t = [{
    host: "127.0.0.2",
    port: 25,
    servername: "mx.x.test",
    helo: "h",
    connectTimeoutMs: 1,
    replyTimeoutMs: 1,
    tls: "may" as const,
  }];
  const msg = {
    from: "a@b",
    recipients: ["c@x.test"],
    size: 1,
    content: () => Promise.resolve(new Blob(["Subject: x\r\n\r\nbody\r\n"]).stream()),
  };
  const n = 500, t0 = performance.now();
  for (let i = 0; i < n; i++) await p.apply("x.test", "may", t, msg);
  console.log(
    `dane=${dane} mta_sts=on: ${
      ((performance.now() - t0) / n).toFixed(3)
    } ms per MX delivery (${n} runs)`,
  );
}
await dns.stop();
await Deno.remove(dir, { recursive: true });
