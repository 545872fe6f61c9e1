/**
 * Table and property tests for the parsers behind outbound TLS policy: the
 * DNS message codec (strict, never crashes on hostile bytes), MTA-STS TXT
 * records and MX patterns (RFC 8461 §3.1, §4.1), TLSA usability (RFC 7672
 * §3.1), the TLS-RPT rua record (RFC 8460 §3) and the report format.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeMessage,
  DnsWireError,
  encodeMessage,
  encodeName,
  TYPE,
} from "../lib/tlspolicy/dns_wire.ts";
import { mxMatches, parseStsPolicy, StsError, stsRecordId } from "../lib/tlspolicy/mta_sts.ts";
import { usableTlsa } from "../lib/tlspolicy/dane.ts";
import { ruaMailto } from "../lib/tlspolicy/rpt_send.ts";
import { stricter } from "../lib/tlspolicy/policy.ts";
import { TlsRpt } from "../lib/tlspolicy/tls_rpt.ts";

Deno.test("DNS codec: a message round-trips, with the AD bit and records", () => {
  const bytes = encodeMessage({
    id: 4242,
    qr: true,
    ad: true,
    question: { name: "_25._tcp.mx.example.org", type: TYPE.TLSA },
    answers: [{
      name: "_25._tcp.mx.example.org",
      type: TYPE.TLSA,
      ttl: 300,
      rdata: new Uint8Array([3, 1, 1, 0xaa]),
    }],
  });
  const m = decodeMessage(bytes);
  assert.equal(m.id, 4242);
  assert.equal(m.flags.ad, true);
  assert.equal(m.flags.qr, true);
  assert.equal(m.question[0].name, "_25._tcp.mx.example.org");
  assert.deepEqual([...m.answers[0].rdata], [3, 1, 1, 0xaa]);
  assert.equal(m.answers[0].ttl, 300);
});

Deno.test("DNS codec: compression loops, forward pointers and truncation are refused", () => {
  const header = [0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
  // A pointer to itself (offset 12).
  assert.throws(
    () => decodeMessage(new Uint8Array([...header, 0xc0, 12, 0, 1, 0, 1])),
    DnsWireError,
  );
  // A forward pointer.
  assert.throws(
    () => decodeMessage(new Uint8Array([...header, 0xc0, 40, 0, 1, 0, 1])),
    DnsWireError,
  );
  // A label longer than the message.
  assert.throws(() => decodeMessage(new Uint8Array([...header, 20, 97, 97])), DnsWireError);
  assert.throws(() => encodeName("a".repeat(64) + ".example"), DnsWireError);
});

Deno.test("DNS codec property: hostile bytes only ever give a message or DnsWireError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      try {
        decodeMessage(bytes);
      } catch (err) {
        if (!(err instanceof DnsWireError)) throw err;
      }
    }),
    { numRuns: 3000 },
  );
});

Deno.test("MTA-STS TXT record: exactly one v=STSv1 with an alphanumeric id", () => {
  assert.equal(stsRecordId(["v=STSv1; id=20190429T010101"]), "20190429T010101");
  assert.equal(stsRecordId(["v=spf1 -all", "v=STSv1;id=abc"]), "abc");
  assert.equal(stsRecordId(["v=STSv1; id=a", "v=STSv1; id=b"]), null); // §3.1: two is none
  assert.equal(stsRecordId(["v=STSv1; id=bad-id"]), null);
  assert.equal(stsRecordId(["v=STSv1"]), null);
  assert.equal(stsRecordId([]), null);
});

Deno.test("MTA-STS mx patterns (§4.1): a wildcard matches exactly one label", () => {
  const table: [string, string[], boolean][] = [
    ["mx1.example.org", ["mx1.example.org"], true],
    ["MX1.Example.ORG.", ["mx1.example.org"], true],
    ["mx1.example.org", ["*.example.org"], true],
    ["a.mx1.example.org", ["*.example.org"], false],
    ["example.org", ["*.example.org"], false],
    ["mx1.example.org.evil", ["mx1.example.org"], false],
    ["mx2.example.org", ["mx1.example.org"], false],
  ];
  for (const [host, patterns, want] of table) {
    assert.equal(mxMatches(host, patterns), want, `${host} vs ${patterns}`);
  }
});

Deno.test("MTA-STS policy property: any text gives a policy or StsError", () => {
  const line = fc.oneof(
    fc.constantFrom("version: STSv1", "mode: enforce", "mode: testing", "mx: *.a.b", "max_age: 9"),
    fc.string({ maxLength: 40 }),
  );
  fc.assert(
    fc.property(fc.array(line, { maxLength: 8 }), (lines) => {
      try {
        const p = parseStsPolicy(lines.join("\r\n"));
        assert.ok(p.mode === "none" || p.mx.length > 0);
      } catch (err) {
        if (!(err instanceof StsError)) throw err;
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("TLSA usability (RFC 7672 §3.1): only DANE-TA/EE with known selector and digest length", () => {
  const t = (usage: number, selector: number, mtype: number, len: number) =>
    usableTlsa({ usage, selector, mtype, data: new Uint8Array(len) });
  assert.equal(t(3, 1, 1, 32), true);
  assert.equal(t(2, 0, 2, 64), true);
  assert.equal(t(3, 0, 0, 500), true);
  assert.equal(t(1, 1, 1, 32), false); // PKIX-EE is unusable for SMTP
  assert.equal(t(0, 1, 1, 32), false);
  assert.equal(t(3, 2, 1, 32), false);
  assert.equal(t(3, 1, 1, 31), false); // wrong digest length
  assert.equal(t(3, 1, 3, 32), false);
});

Deno.test("TLS-RPT rua: mailto addresses of one v=TLSRPTv1 record", () => {
  assert.deepEqual(ruaMailto(["v=TLSRPTv1; rua=mailto:a@example.org,https://r.example/x"]), [
    "a@example.org",
  ]);
  assert.deepEqual(ruaMailto(["v=TLSRPTv1;rua=mailto:a@x.org,mailto:b@y.org"]), [
    "a@x.org",
    "b@y.org",
  ]);
  assert.deepEqual(
    ruaMailto(["v=TLSRPTv1; rua=mailto:a@x.org", "v=TLSRPTv1; rua=mailto:b@x.org"]),
    [],
  );
  assert.deepEqual(ruaMailto(["v=STSv1; id=1"]), []);
  // Escapes are decoded, then checked: a bad escape or a decoded CR/LF or ">" is dropped.
  assert.deepEqual(ruaMailto(["v=TLSRPTv1; rua=mailto:a%2Bb@x.org"]), ["a+b@x.org"]);
  assert.deepEqual(ruaMailto(["v=TLSRPTv1; rua=mailto:a%zz@x.org"]), []);
  assert.deepEqual(ruaMailto(["v=TLSRPTv1; rua=mailto:a%0D%0ARCPT@x.org"]), []);
  assert.deepEqual(ruaMailto(["v=TLSRPTv1; rua=mailto:a%3E@x.org"]), []);
});

Deno.test("TLS policy modes: the stricter wins", () => {
  assert.equal(stricter("may", "verify"), "verify");
  assert.equal(stricter("require", "may"), "require");
  assert.equal(stricter("none", "may"), "may");
});

Deno.test("TLS-RPT: a finished day becomes one RFC 8460 report per domain; state survives a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-tlsrpt-" });
  try {
    let now = Date.parse("2026-12-01T10:00:00Z");
    const opts = {
      statePath: `${dir}/state.json`,
      reportDir: `${dir}/reports`,
      hostname: "mx.sender.test",
      now: () => now,
    };
    const policy = {
      type: "sts" as const,
      strings: ["version: STSv1", "mode: enforce"],
      mxHost: ["*.x.test"],
    };
    const a = new TlsRpt(opts);
    await a.record({ domain: "x.test", policy, result: "success" });
    await a.record({ domain: "x.test", policy, result: "success" });
    await a.record({
      domain: "x.test",
      policy,
      result: "certificate-expired",
      mx: "mx.x.test",
      ip: "192.0.2.1",
    });
    // A new process (restart) on the next day writes the report.
    now = Date.parse("2026-12-02T00:00:01Z");
    const b = new TlsRpt(opts);
    const paths = await b.rollover();
    assert.deepEqual(paths, [`${dir}/reports/2026-12-01_x.test_mx.sender.test.json`]);
    const r = JSON.parse(await Deno.readTextFile(paths[0]));
    assert.deepEqual(r["date-range"], {
      "start-datetime": "2026-12-01T00:00:00Z",
      "end-datetime": "2026-12-01T23:59:59Z",
    });
    assert.equal(r["organization-name"], "mx.sender.test");
    assert.equal(r.policies[0].policy["policy-domain"], "x.test");
    assert.deepEqual(r.policies[0].summary, {
      "total-successful-session-count": 2,
      "total-failure-session-count": 1,
    });
    assert.deepEqual(r.policies[0]["failure-details"], [{
      "result-type": "certificate-expired",
      "receiving-ip": "192.0.2.1",
      "receiving-mx-hostname": "mx.x.test",
      "failed-session-count": 1,
    }]);
    // Written once: the day is gone from the state.
    assert.deepEqual(await b.rollover(), []);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(`${dir}/state.json`)), {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
