/**
 * The mail authentication settings: [[dkim]], [mailauth] and the listener
 * keys dmarc and spf_fail parse into the documented values and mistakes
 * name their key; DKIM keys are checked (type, 2048-bit RSA floor), cached,
 * and read again after forgetDkimKeys (what a reload calls).
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { ConfigError, parseConfig } from "../lib/config/load.ts";
import { dkimKey, forgetDkimKeys, parseDkimKey } from "../lib/mailauth/keys.ts";
import { generateDkimKey } from "../lib/mailauth/keygen.ts";

const CWD = "/srv/skiff";

Deno.test("mailauth config: [[dkim]], [mailauth] and listener policy parse", () => {
  const c = parseConfig(
    `[[listener]]
address = "0.0.0.0:25"
dmarc = "report"
spf_fail = "reject"
[mailauth]
authserv_id = "MX.Example.org"
quarantine = "none"
[[dkim]]
domain = "Example.org"
selector = "s1"
key = "keys/s1.pem"
[[dkim]]
domain = "example.org"
selector = "e1"
key = "/k/e1.pem"
algorithm = "ed25519-sha256"
`,
    "skiff.toml",
    { cwd: CWD },
  );
  assert.equal(c.listeners[0].dmarc, "report");
  assert.equal(c.listeners[0].spfFail, "reject");
  assert.equal(c.mailauth.authservId, "mx.example.org");
  assert.equal(c.mailauth.quarantine, "none");
  assert.deepEqual(c.dkim, [
    {
      domain: "example.org",
      selector: "s1",
      key: "/srv/skiff/keys/s1.pem",
      algorithm: "rsa-sha256",
    },
    { domain: "example.org", selector: "e1", key: "/k/e1.pem", algorithm: "ed25519-sha256" },
  ]);
});

Deno.test("mailauth config: mistakes name the key", () => {
  const bad: [string, string][] = [
    ['[[listener]]\naddress = "127.0.0.1:25"\ndmarc = "strict"', "listener[0].dmarc"],
    ['[[listener]]\naddress = "127.0.0.1:25"\nspf_fail = "bounce"', "listener[0].spf_fail"],
    ['[mailauth]\nquarantine = "junk"', "mailauth.quarantine"],
    ["[mailauth]\nmax_lookups = 3", "mailauth.max_lookups"],
    ['[mailauth]\nauthserv_id = "not a host"', "mailauth.authserv_id"],
    ["[mailauth]\nfoo = 1", "mailauth.foo"],
    ['[[dkim]]\ndomain = "example.org"\nkey = "/k"', "dkim[0].selector"],
    ['[[dkim]]\ndomain = "x"\nselector = "s"\nkey = "/k"', "dkim[0].domain"],
    [
      '[[dkim]]\ndomain = "a.org"\nselector = "s"\nkey = "/k"\nalgorithm = "rsa-sha1"',
      "dkim[0].algorithm",
    ],
    [
      '[[dkim]]\ndomain = "a.org"\nselector = "s"\nkey = "/k"\n[[dkim]]\ndomain = "a.org"\nselector = "s"\nkey = "/j"',
      "dkim[1].selector",
    ],
  ];
  for (const [toml, key] of bad) {
    assert.throws(() => parseConfig(toml, "skiff.toml", { cwd: CWD }), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.key, key, e.message);
      return true;
    });
  }
});

Deno.test("dkim keys: wrong type and short RSA keys are refused, naming the file", () => {
  const entry = { domain: "a.org", selector: "s", key: "/k.pem", algorithm: "rsa-sha256" } as const;
  const ed = generateDkimKey("ed25519").privatePem;
  assert.throws(
    () => parseDkimKey(ed, entry),
    /DKIM key \/k\.pem is an ed25519 key; algorithm rsa-sha256 needs rsa/,
  );
  const short = generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey.export({
    type: "pkcs8",
    format: "pem",
  }) as string;
  assert.throws(() => parseDkimKey(short, entry), /has 1024 bits; at least 2048/);
  assert.throws(() => parseDkimKey("junk", entry), /is not a PEM private key/);
  assert.equal(parseDkimKey(generateDkimKey("rsa").privatePem, entry).asymmetricKeyType, "rsa");
});

Deno.test("dkim keys: cached until forgotten (a reload), then read again", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const entry = {
      domain: "a.org",
      selector: "s",
      key: `${dir}/k.pem`,
      algorithm: "ed25519-sha256",
    } as const;
    await Deno.writeTextFile(entry.key, generateDkimKey("ed25519").privatePem);
    const first = await dkimKey(entry);
    await Deno.writeTextFile(entry.key, generateDkimKey("ed25519").privatePem);
    assert.equal(await dkimKey(entry), first, "cached: no file read per message");
    forgetDkimKeys();
    const second = await dkimKey(entry);
    assert.notDeepEqual(
      second.key.export({ format: "jwk" }),
      first.key.export({ format: "jwk" }),
      "the rotated key is read after a reload",
    );
    await Deno.remove(entry.key);
    forgetDkimKeys();
    await assert.rejects(dkimKey(entry), /DKIM key .*k\.pem cannot be read/);
  } finally {
    forgetDkimKeys();
    await Deno.remove(dir, { recursive: true });
  }
});
