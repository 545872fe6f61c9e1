/**
 * Config loading: the embedded default and conf/skiff.toml parse and agree,
 * every kind of mistake names its file, key, expectation and finding, and the
 * CIDR matcher that decides relay permission handles IPv4, IPv6 and mapped
 * addresses.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ConfigError,
  describeConfig,
  loadConfig,
  parseConfig,
  parseHostPort,
} from "../lib/config/load.ts";
import { EX_CONFIG } from "../lib/sys/exit_codes.ts";
import { DEFAULT_CONFIG_TOML } from "../lib/config/default.ts";
import { formatCidr, inNetworks, parseCidr } from "../lib/config/cidr.ts";
import type { Config } from "../lib/config/types.ts";

const CONF = new URL("../conf/skiff.toml", import.meta.url);
const CWD = "/srv/skiff";

function withoutSource(c: Config): Omit<Config, "source"> {
  const { source: _, ...rest } = c;
  return rest;
}

Deno.test("embedded default parses into the documented values", () => {
  const c = parseConfig(DEFAULT_CONFIG_TOML, "(embedded default)", { cwd: CWD });
  assert.deepEqual(c, {
    source: "(embedded default)",
    hostname: "localhost",
    user: null,
    spoolDir: "/srv/skiff/var/spool",
    relayNetworks: ["127.0.0.0/8", "::1/128"],
    listeners: [{
      address: { kind: "tcp", host: "127.0.0.1", port: 2525 },
      mode: 0o666,
      protocol: "smtp",
      tls: "none",
      tlsCert: "",
      tlsKey: "",
      auth: "none",
      authPlaintext: false,
      requireAuth: false,
      senders: "own",
      destination: "router",
      limits: {},
      milters: [],
      dmarc: "enforce",
      spfFail: "header",
    }, {
      address: { kind: "unix", path: "/srv/skiff/var/run/submit.sock" },
      mode: 0o666,
      protocol: "smtp",
      tls: "none",
      tlsCert: "",
      tlsKey: "",
      auth: "none",
      authPlaintext: false,
      requireAuth: false,
      senders: "own",
      destination: "router",
      limits: {},
      milters: [],
      dmarc: "enforce",
      spfFail: "header",
    }].map((l, i) => i === 1 ? { ...l, auth: "peercred" } : l),
    auth: {
      credentials: "",
      trustedUsers: [],
      maxFailures: 5,
      failureWindow: 300,
      concurrentChecks: 4,
    },
    limits: {
      messageSize: 10485760,
      commandLineLength: 512,
      recipients: 100,
      commandTimeout: 300,
      dataTimeout: 600,
      errors: 10,
      connections: 100,
      connectionsPerIp: 20,
      sessionTimeout: 1800,
      unknownCommands: 5,
      unauthenticatedCommands: 20,
      greetPause: 0,
      outputBuffer: 262144,
    },
    queue: {
      retryMin: 300,
      retryMax: 14400,
      lifetime: 432000,
      workerTimeout: 60,
      workers: 4,
      scanInterval: 60,
      relayConcurrency: 10,
      minFreeBytes: 16777216,
      spoolSync: "syncfs",
    },
    relay: { relayhost: null, connectTimeout: 30, replyTimeout: 300 },
    local: {
      domains: ["localhost"],
      maildirRoot: "/srv/skiff/var/mail",
      verifyRecipients: true,
      existingMaildirsOnly: false,
    },
    log: { format: "text", level: "info", file: "" },
    delivery: {
      delayWarning: 0,
      maxReceived: 50,
      nameserver: null,
      dnsTimeout: 10,
      aliases: "",
      forward: false,
      cacheSize: 20,
      cacheIdle: 30,
      concurrency: 10,
      rate: 0,
      tls: "may",
      tlsCaFile: "",
      tlsPolicy: { mtaSts: "on", mtaStsCaFile: "", dane: "on", tlsRpt: "off", tlsRptDir: "" },
      authUser: "",
      authPassword: "",
      localMailbox: "maildir",
      mboxDir: "/srv/skiff/var/mail",
      localUsers: false,
      defaultPrivs: "nobody",
    },
    routes: [],
    http: { address: null, allowRemote: false, token: "", tokenFile: "" },
    dkim: [],
    mailauth: {
      authservId: "",
      quarantine: "header",
      dnsTimeout: 20,
      maxLookups: 50,
      minKeyBits: 1024,
    },
    sendmail: { maildropDir: "/srv/skiff/var/maildrop", untrustedSender: "refuse" },
    milter: {
      defaultAction: "tempfail",
      connectTimeout: 30,
      commandTimeout: 30,
      contentTimeout: 300,
    },
  });
});

Deno.test("loadConfig() without a path is the embedded default", async () => {
  const c = await loadConfig();
  assert.equal(c.source, "(embedded default)");
  assert.deepEqual(c.listeners[0].address, { kind: "tcp", host: "127.0.0.1", port: 2525 });
  assert.equal(EX_CONFIG, 78);
});

Deno.test("conf/skiff.toml parses, lists every key, and matches the default", async () => {
  const text = await Deno.readTextFile(CONF);
  const c = parseConfig(text, "conf/skiff.toml", { cwd: CWD });
  assert.equal(c.source, "conf/skiff.toml");
  const d = parseConfig(DEFAULT_CONFIG_TOML, "(embedded default)", { cwd: CWD });
  assert.deepEqual(withoutSource(c), withoutSource(d));
  // Every key of the default appears, uncommented, in the example.
  const keys = (t: string) =>
    t.split("\n").filter((l) => /^[a-z_]+ =/.test(l)).map((l) => l.split(" ")[0]).sort();
  assert.deepEqual(keys(text), keys(DEFAULT_CONFIG_TOML));
  const loaded = await loadConfig(CONF.pathname);
  assert.equal(loaded.source, CONF.pathname);
});

Deno.test("a file overrides only the keys it sets", () => {
  const c = parseConfig(
    `hostname = "mail.example.org"
[limits]
recipients = 500
[relay]
relayhost = "smtp.example.org:587"
[local]
domains = ["Example.ORG", "example.org", "localhost"]
maildir_root = "/var/mail"
[[listener]]
address = "[::1]:25"
[[listener]]
address = "0.0.0.0:587"
protocol = "smtp"
`,
    "skiff.toml",
    { cwd: CWD },
  );
  assert.equal(c.hostname, "mail.example.org");
  assert.equal(c.limits.recipients, 500);
  assert.equal(c.limits.messageSize, 10485760);
  assert.deepEqual(c.relay.relayhost, { host: "smtp.example.org", port: 587 });
  assert.deepEqual(c.local.domains, ["example.org", "localhost"]);
  assert.equal(c.local.maildirRoot, "/var/mail");
  assert.deepEqual(c.listeners.map((l) => [l.address, l.protocol]), [
    [{ kind: "tcp", host: "::1", port: 25 }, "smtp"],
    [{ kind: "tcp", host: "0.0.0.0", port: 587 }, "smtp"],
  ]);
});

Deno.test("describeConfig renders TOML that parses back to the same config", () => {
  const c = parseConfig(
    `hostname = "mx.example.net"
relay_networks = ["10.0.0.0/8", "2001:db8::/32", "::ffff:192.168.0.0/112"]
[[listener]]
address = "[2001:db8::1]:25"
[relay]
relayhost = "[2001:db8::25]:2525"
[log]
format = "json"
level = "debug"
`,
    "skiff.toml",
    { cwd: CWD },
  );
  const text = describeConfig(c);
  assert.match(text, /^relayhost = "\[2001:db8::25\]:2525"$/m);
  assert.match(text, /^relay_networks = \["10.0.0.0\/8", "2001:db8::\/32", "192.168.0.0\/16"\]$/m);
  const again = parseConfig(text, "described", { cwd: "/elsewhere" });
  assert.deepEqual(withoutSource(again), withoutSource(c));
  const d = parseConfig(DEFAULT_CONFIG_TOML, "(embedded default)", { cwd: CWD });
  assert.deepEqual(withoutSource(parseConfig(describeConfig(d), "x")), withoutSource(d));
});

/** [toml, key, expected (substring), found] */
const BAD: [string, string, string, string][] = [
  ['[limits]\nrecipients = "ten"', "limits.recipients", "a positive integer", '"ten"'],
  ["[limits]\nrecipients = 0", "limits.recipients", "a positive integer", "0"],
  ["[limits]\nmessage_size = -1", "limits.message_size", "a positive integer", "-1"],
  ["[limits]\nerrors = 2.5", "limits.errors", "a positive integer", "2.5"],
  ["[limits]\nconnections = inf", "limits.connections", "a positive integer", "inf"],
  ["[limits]\ncommand_timeout = 3000000", "limits.command_timeout", "seconds", "3000000"],
  ["[queue]\nworkers = true", "queue.workers", "a positive integer", "true"],
  [
    "[queue]\nretry_min = 600\nretry_max = 300",
    "queue.retry_min",
    "at most queue.retry_max",
    "600",
  ],
  ["[relay]\nreply_timeout = []", "relay.reply_timeout", "seconds", "[]"],
  [
    '[relay]\nrelayhost = "smtp.example.org"',
    "relay.relayhost",
    '"host:port"',
    '"smtp.example.org"',
  ],
  [
    '[relay]\nrelayhost = "smtp.example.org:0"',
    "relay.relayhost",
    "1-65535",
    '"smtp.example.org:0"',
  ],
  ['[relay]\nrelayhost = "::1:25"', "relay.relayhost", "[::1]:25", '"::1:25"'],
  [
    '[[listener]]\naddress = "127.0.0.1:65536"',
    "listener[0].address",
    "1-65535",
    '"127.0.0.1:65536"',
  ],
  ['[[listener]]\naddress = "[::1]"', "listener[0].address", "host:port", '"[::1]"'],
  ['[[listener]]\naddress = "[zz::1]:25"', "listener[0].address", "host:port", '"[zz::1]:25"'],
  ["[[listener]]\naddress = 25", "listener[0].address", "host:port", "25"],
  [
    '[[listener]]\naddress = "127.0.0.1:25"\nprotocol = "http"',
    "listener[0].protocol",
    '"smtp"',
    '"http"',
  ],
  [
    '[[listener]]\naddress = "127.0.0.1:25"\n[[listener]]\naddress = "127.0.0.1:25"',
    "listener[1].address",
    "no other listener",
    '"127.0.0.1:25"',
  ],
  ["listener = []", "listener", "at least one [[listener]]", "[]"],
  [
    '[listener]\naddress = "127.0.0.1:25"',
    "listener",
    "array of [[listener]]",
    "a table",
  ],
  ['relay_networks = ["10.0.0.0/33"]', "relay_networks[0]", "prefix length", '"10.0.0.0/33"'],
  ['relay_networks = ["10.1.2.3/8"]', "relay_networks[0]", "host bits", '"10.1.2.3/8"'],
  ['relay_networks = ["localhost"]', "relay_networks[0]", "not an ip address", '"localhost"'],
  ['relay_networks = ["010.0.0.0/8"]', "relay_networks[0]", "10.0.0.0/8", '"010.0.0.0/8"'],
  ['relay_networks = "127.0.0.0/8"', "relay_networks", "an array", '"127.0.0.0/8"'],
  ["relay_networks = [1]", "relay_networks[0]", "CIDR", "1"],
  ['[local]\ndomains = ["example..org"]', "local.domains[0]", "host name", '"example..org"'],
  ['[local]\ndomains = ["-bad.org"]', "local.domains[0]", "host name", '"-bad.org"'],
  ['[local]\ndomains = ["a b"]', "local.domains[0]", "host name", '"a b"'],
  ['[local]\nmaildir_root = ""', "local.maildir_root", "non-empty path", '""'],
  ['spool_dir = "a\\u0000b"', "spool_dir", "non-empty path", '"a\\u0000b"'],
  ['hostname = "mail_example.org"', "hostname", "host name", '"mail_example.org"'],
  ['hostname = ""', "hostname", "host name", '""'],
  ['[[listener]]\nprotocol = "smtp"', "listener[0].address", "host:port", "nothing"],
  ["hostname = 1979-05-27T07:32:00Z", "hostname", "host name", "1979-05-27T07:32:00.000Z"],
  ['[log]\nlevel = "warn"', "log.level", '"warning"', '"warn"'],
  ['[log]\nformat = "JSON"', "log.format", '"text", "json"', '"JSON"'],
  ["limits = 5", "limits", "a table [limits]", "5"],
  // Unknown keys, with a suggestion when one is close.
  [
    "[limits]\nrecipents = 5",
    "limits.recipents",
    'did you mean "limits.recipients"',
    "unknown key",
  ],
  ["hostnmae = 'x'", "hostnmae", 'did you mean "hostname"', "unknown key"],
  ["[limit]\nrecipients = 5", "limit", 'did you mean "limits"', "unknown key"],
  ["[tls]\ncert = 'x'", "tls", "one of hostname, spool_dir", "unknown key"],
  [
    '[[listener]]\naddress = "127.0.0.1:25"\ntls = true',
    "listener[0].tls",
    'one of "none", "starttls", "implicit"',
    "true",
  ],
];

Deno.test("bad configs name the key, the expectation and what was found", async (t) => {
  for (const [toml, key, expected, found] of BAD) {
    await t.step(`${key}: ${toml.replaceAll("\n", " ")}`, () => {
      try {
        parseConfig(toml, "skiff.toml", { cwd: CWD });
        assert.fail("parsed without error");
      } catch (e) {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal(e.file, "skiff.toml");
        assert.equal(e.key, key);
        assert.ok(
          e.expected.toLowerCase().includes(expected.toLowerCase()),
          `expected ${JSON.stringify(e.expected)} to include ${JSON.stringify(expected)}`,
        );
        assert.equal(e.found, found);
        assert.equal(e.message, `skiff.toml: key "${key}": expected ${e.expected}, found ${found}`);
        assert.match(e.message, /^skiff\.toml: key "/);
      }
    });
  }
});

Deno.test("the message has the documented form", () => {
  assert.throws(() => parseConfig('[limits]\nrecipients = "ten"', "skiff.toml"), {
    message: 'skiff.toml: key "limits.recipients": expected a positive integer, found "ten"',
  });
});

Deno.test("TOML syntax errors give line and column", () => {
  try {
    parseConfig('hostname = "a"\n[limits]\nrecipients = = 5\n', "/etc/skiff.toml");
    assert.fail("parsed");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.key, "(syntax)");
    assert.equal(e.file, "/etc/skiff.toml");
    assert.equal(e.line, 3);
    assert.equal(e.column, 14);
    assert.match(
      e.message,
      /^\/etc\/skiff\.toml: key "\(syntax\)": expected valid TOML, found .* at line 3, column 14$/,
    );
  }
  assert.throws(() => parseConfig("hostname = 'a'\nhostname = 'b'\n", "x.toml"), {
    key: "(syntax)",
    line: 2,
  });
});

Deno.test("a missing or unreadable file is a ConfigError for key (file)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadConfig(`${dir}/nope.toml`), {
      name: "ConfigError",
      key: "(file)",
      found: "no such file",
    });
    await assert.rejects(loadConfig(dir), { key: "(file)" });
    await Deno.writeFile(`${dir}/bin.toml`, new Uint8Array([0x68, 0xff, 0xfe]));
    await assert.rejects(loadConfig(`${dir}/bin.toml`), {
      key: "(file)",
      found: "bytes that are not UTF-8",
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("host:port parsing", () => {
  assert.deepEqual(parseHostPort("127.0.0.1:25"), { host: "127.0.0.1", port: 25 });
  assert.deepEqual(parseHostPort("[::1]:2525"), { host: "::1", port: 2525 });
  assert.deepEqual(parseHostPort("[smtp.example.org]:587"), {
    host: "smtp.example.org",
    port: 587,
  });
  assert.deepEqual(parseHostPort("mx.example.org:65535"), { host: "mx.example.org", port: 65535 });
  for (
    const bad of [
      "",
      ":25",
      "host:",
      "host:025",
      "host:1e3",
      "::1:25",
      "[::1]25",
      "a b:25",
      "1.2.3.256:25",
    ]
  ) {
    assert.equal(parseHostPort(bad), null, bad);
  }
});

Deno.test("CIDR: IPv4", () => {
  const nets = ["127.0.0.0/8", "192.168.1.0/24", "10.1.2.3"];
  assert.ok(inNetworks("127.0.0.1", nets));
  assert.ok(inNetworks("127.255.255.255", nets));
  assert.ok(inNetworks("192.168.1.77", nets));
  assert.ok(inNetworks("10.1.2.3", nets));
  assert.ok(!inNetworks("10.1.2.4", nets));
  assert.ok(!inNetworks("128.0.0.1", nets));
  assert.ok(!inNetworks("192.168.2.1", nets));
  assert.ok(inNetworks("203.0.113.9", ["0.0.0.0/0"]));
  assert.ok(inNetworks("172.16.0.1", ["172.16.0.0/12"]));
  assert.ok(inNetworks("172.31.255.255", ["172.16.0.0/12"]));
  assert.ok(!inNetworks("172.32.0.0", ["172.16.0.0/12"]));
  assert.ok(!inNetworks("", nets));
  assert.ok(!inNetworks("127.0.0.01", nets), "leading zero is not an address");
  assert.ok(!inNetworks("127.1", nets), "short forms are not addresses");
});

Deno.test("CIDR: IPv6", () => {
  const nets = ["::1/128", "2001:db8::/32", "fe80::/10"];
  assert.ok(inNetworks("::1", nets));
  assert.ok(inNetworks("0:0:0:0:0:0:0:1", nets));
  assert.ok(!inNetworks("::2", nets));
  assert.ok(inNetworks("2001:db8:ffff::1", nets));
  assert.ok(inNetworks("2001:DB8::abcd", nets));
  assert.ok(!inNetworks("2001:db9::1", nets));
  assert.ok(inNetworks("fe80::1%eth0", nets));
  assert.ok(inNetworks("febf::1", nets));
  assert.ok(!inNetworks("fec0::1", nets));
  assert.ok(!inNetworks("127.0.0.1", ["::/0"]), "IPv4 is not in an IPv6 network");
  assert.ok(!inNetworks("::1", ["0.0.0.0/0"]));
  for (const bad of ["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "::g", ":1", "1:2:3:4:5:6:7::8"]) {
    assert.ok(!inNetworks(bad, ["::/0"]), bad);
  }
  assert.ok(inNetworks("1:2:3:4:5:6:7::", ["::/0"]));
});

Deno.test("CIDR: IPv4-mapped IPv6", () => {
  assert.ok(inNetworks("::ffff:127.0.0.1", ["127.0.0.0/8"]));
  assert.ok(inNetworks("::FFFF:7f00:1", ["127.0.0.0/8"]));
  assert.ok(!inNetworks("::ffff:128.0.0.1", ["127.0.0.0/8"]));
  assert.ok(inNetworks("127.0.0.1", ["::ffff:127.0.0.0/104"]));
  assert.ok(inNetworks("::ffff:10.9.8.7", ["::ffff:10.0.0.0/104"]));
  assert.ok(!inNetworks("::127.0.0.1", ["127.0.0.0/8"]), "IPv4-compatible is not mapped");
  assert.equal(formatCidr(parseCidr("::ffff:10.0.0.0/104")), "10.0.0.0/8");
});

Deno.test("CIDR: parse and format", () => {
  assert.equal(
    formatCidr(parseCidr("2001:0db8:0000:0000:0000:0000:0000:0000/32")),
    "2001:db8::/32",
  );
  assert.equal(formatCidr(parseCidr("::/0")), "::/0");
  assert.equal(formatCidr(parseCidr("1:0:0:2:0:0:0:0/128")), "1:0:0:2::/128");
  assert.equal(formatCidr(parseCidr("1:0:2:3:4:5:6:7/128")), "1:0:2:3:4:5:6:7/128");
  assert.equal(formatCidr(parseCidr("10.0.0.1")), "10.0.0.1/32");
  assert.throws(() => parseCidr("10.0.0.0/8/8"), RangeError);
  assert.throws(() => parseCidr("::1/129"), RangeError);
  assert.throws(() => parseCidr("10.0.0.0/"), RangeError);
  assert.throws(() => parseCidr("2001:db8::1/32"), /Host bits/);
});

Deno.test("CIDR property: an address is in its own /n network, and format round-trips", () => {
  const v4 = fc.tuple(
    fc.array(fc.nat(255), { minLength: 4, maxLength: 4 }),
    fc.integer({ min: 0, max: 32 }),
  );
  fc.assert(fc.property(v4, ([bytes, prefix]) => {
    const ip = bytes.join(".");
    const net = { family: 4 as const, bytes: new Uint8Array(bytes), prefix };
    for (let bit = prefix; bit < 32; bit++) net.bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
    const text = formatCidr(net);
    assert.ok(inNetworks(ip, [text]));
    assert.ok(inNetworks(`::ffff:${ip}`, [text]));
    assert.equal(formatCidr(parseCidr(text)), text);
  }));
  const v6 = fc.tuple(
    fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }),
    fc.integer({ min: 0, max: 128 }),
  );
  fc.assert(fc.property(v6, ([groups, prefix]) => {
    const ip = groups.map((g) => g.toString(16)).join(":");
    const bytes = new Uint8Array(16);
    groups.forEach((g, i) => [bytes[2 * i], bytes[2 * i + 1]] = [g >> 8, g & 0xff]);
    const mapped = groups.slice(0, 6).join(",") === "0,0,0,0,0,65535";
    fc.pre(!mapped);
    for (let bit = prefix; bit < 128; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
    const text = formatCidr({ family: 6, bytes, prefix });
    assert.ok(inNetworks(ip, [text]), `${ip} in ${text}`);
    assert.equal(formatCidr(parseCidr(text)), text);
  }));
});
