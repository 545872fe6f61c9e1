/**
 * The SMTP client's STARTTLS (RFC 3207) and AUTH (RFC 4954) against a real
 * receiving skiff: a QueueManager in this process delivers through
 * `[[route]]`s to a `skiff serve` with a plain listener, a STARTTLS
 * listener whose certificate a test CA signed, and a STARTTLS listener that
 * requires SASL AUTH. tls = "may" is delivered with TLS in the Received
 * header; "verify" is delivered when tls_ca_file trusts the CA, and deferred
 * with 4.7.5 (never sent in clear) when it does not or the name is wrong;
 * "require" without STARTTLS is deferred with 4.7.4; AUTH PLAIN with the
 * right password is delivered and the receiver logs the identity; a wrong
 * password is deferred (4.7.8), not bounced. The loopback rule for AUTH
 * without TLS is checked on a scripted wire. Everything stays on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { hashPassword } from "../lib/auth/credentials.ts";
import { QueueManager } from "../lib/queue/manager.ts";
import { Spool } from "../lib/spool/spool.ts";
import type { Wire } from "../lib/smtp/client_conn.ts";
import { SessionEnd, SmtpSession } from "../lib/smtp/client_session.ts";
import { ConfigError, parseConfig } from "../lib/config/load.ts";
import { freePort, maildirFiles, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { spoolMessage, testConfig } from "./delivery_peers.ts";
import { makeCerts } from "./certs.ts";

const PASSWORD = "s3cret pass";

/** The receiver: plain listener (harness), STARTTLS, and STARTTLS with required SASL AUTH. */
async function receiver(domains: string[]) {
  const dir = await Deno.makeTempDir({ prefix: "skiff-ctls-" });
  await makeCerts(dir);
  const [starttls, sasl] = [await freePort(), await freePort()];
  await Deno.writeTextFile(`${dir}/credentials`, `alice:${await hashPassword(PASSWORD)}\n`);
  const listener = (port: number, auth: string) =>
    `[[listener]]
address = "127.0.0.1:${port}"
tls = "starttls"
tls_cert = "${dir}/cert.pem"
tls_key = "${dir}/key.pem"
${auth}
`;
  const server = await SkiffServer.start({
    dir,
    top: "relay_networks = []",
    domains: ["localhost", ...domains],
    toml: `${listener(starttls, "")}${listener(sasl, 'auth = "sasl"\nrequire_auth = true')}
[auth]
credentials = "${dir}/credentials"
`,
  });
  return { server, dir, plain: server.port, starttls, sasl };
}

/** One smtp route to 127.0.0.1 (or `host`), with extra keys. */
function route(domain: string, port: number, keys: string, host = "127.0.0.1"): string {
  return `[[route]]\ndomain = "${domain}"\ntype = "smtp"\nhost = "${host}:${port}"\n${keys}\n`;
}

peerTest(
  "client STARTTLS may/verify/require and AUTH PLAIN against a skiff receiver",
  [PEERS.openssl],
  async () => {
    const cases = {
      may: "may.test",
      verify: "verify.test",
      noca: "noca.test",
      wrongname: "wrongname.test",
      require: "require.test",
      auth: "auth.test",
      badauth: "badauth.test",
      noauth: "noauth.test",
    };
    const rx = await receiver(Object.values(cases));
    const dir = await Deno.makeTempDir({ prefix: "skiff-ctls-tx-" });
    try {
      const ca = `${rx.dir}/ca.pem`;
      const cfg = testConfig(
        dir,
        `[relay]\nconnect_timeout = 5\nreply_timeout = 10\n` +
          route(cases.may, rx.starttls, 'tls = "may"') +
          // The certificate is for "localhost": verified by name through the route's CA file.
          route(cases.verify, rx.starttls, `tls = "verify"\ntls_ca_file = "${ca}"`, "localhost") +
          // Right name, but nothing trusts the test CA.
          route(cases.noca, rx.starttls, 'tls = "verify"', "localhost") +
          // Trusted CA, but the certificate does not name 127.0.0.1.
          route(cases.wrongname, rx.starttls, `tls = "verify"\ntls_ca_file = "${ca}"`) +
          // The harness's plain listener offers no STARTTLS.
          route(cases.require, rx.plain, 'tls = "require"') +
          route(
            cases.auth,
            rx.sasl,
            `tls = "verify"\ntls_ca_file = "${ca}"\nauth_user = "alice"\nauth_password = "${PASSWORD}"`,
            "localhost",
          ) +
          route(
            cases.badauth,
            rx.sasl,
            `tls = "may"\nauth_user = "alice"\nauth_password = "nope"`,
          ) +
          // The sasl listener requires AUTH: without it, MAIL is refused (530).
          route(cases.noauth, rx.sasl, 'tls = "may"'),
      );
      const spool = new Spool(cfg.spoolDir);
      await spool.init();
      const names = Object.keys(cases) as (keyof typeof cases)[];
      const id = await spoolMessage(spool, {
        from: "alice@localhost",
        to: names.map((n) => `${n}@${cases[n]}`),
      }, "Subject: client tls\r\n\r\nhello over TLS\r\n");
      const m = new QueueManager({ config: cfg, spool });
      await m.scan();
      await m.idle();
      await m.stop();

      const state = await spool.load(id);
      const by = Object.fromEntries(names.map((n, i) => [n, state.recipients[i]]));
      const show = JSON.stringify(state.recipients, null, 1) + `\nreceiver log:\n${rx.server.log}`;
      const mail = async (user: string) => {
        const files = await maildirFiles(`${rx.dir}/mail/${user}`);
        return await Promise.all(files.map((f) => Deno.readTextFile(f)));
      };
      // The receiver delivers to its Maildirs after its 250: wait for the file.
      const delivered = (user: string) =>
        waitFor(async () => (await mail(user))[0], 15_000, `${user}'s mail; ${show}`);

      // may: delivered over TLS; the receiver's Received header names version and cipher.
      assert.equal(by.may.status, "delivered", show);
      const may = await delivered("may");
      assert.match(may, /\(using TLSv1\.[23] with cipher \S+\)/);
      assert.match(may, /with ESMTPS id/);

      // verify with the CA trusted through tls_ca_file: delivered, over TLS.
      assert.equal(by.verify.status, "delivered", show);
      assert.match(await delivered("verify"), /with ESMTPS id/);

      // verify without trusting the CA, or with the wrong name: 4.7.5, nothing sent.
      for (const n of ["noca", "wrongname"] as const) {
        assert.equal(by[n].status, "deferred", show);
        assert.equal(by[n].dsn, "4.7.5", show);
        assert.match(by[n].text ?? "", /Server certificate not verified/, show);
        assert.deepEqual(await mail(n), [], `${n} must not be delivered`);
      }
      assert.match(by.noca.text ?? "", /certificate|issuer|UnknownIssuer/i, show);
      assert.match(by.wrongname.text ?? "", /name|NotValidForName|IP|altnames/i, show);
      // The receiver notices the dropped handshake at once, not after its
      // command timeout (300 s): the TLSSocket reports only "end"/"close".
      await rx.server.waitForLog(
        /tls handshake failed .*Connection closed during the TLS handshake/,
      );

      // require against a listener without STARTTLS: 4.7.4, nothing sent.
      assert.equal(by.require.status, "deferred", show);
      assert.equal(by.require.dsn, "4.7.4", show);
      assert.match(by.require.text ?? "", /TLS is required, but was not offered/);
      assert.deepEqual(await mail("require"), []);

      // AUTH PLAIN over verified TLS: delivered; the receiver logged the identity.
      assert.equal(by.auth.status, "delivered", show);
      assert.match(await delivered("auth"), /with ESMTPSA id/);
      await rx.server.waitForLog(/auth .*user=alice.*mechanism=PLAIN/);
      await rx.server.waitForLog(/received .*auth=alice/);

      // A wrong password: RFC 4954's 535 5.7.8, deferred (the operator's to fix), not bounced.
      assert.equal(by.badauth.status, "deferred", show);
      assert.equal(by.badauth.dsn, "4.7.8", show);
      assert.match(by.badauth.text ?? "", /SASL authentication failed.* said: 535 5\.7\.8/, show);
      await rx.server.waitForLog(/auth failed .*user=alice/);
      assert.deepEqual(await mail("badauth"), []);

      // No AUTH where the listener requires it: the server's 530 5.7.0 is permanent.
      assert.equal(by.noauth.status, "failed", show);
      assert.equal(by.noauth.dsn, "5.7.0", show);

      // The two refused handshakes never reached MAIL on the receiver.
      const received = rx.server.log.match(/ received id=/g)?.length ?? 0;
      assert.equal(received, 3, show); // may, verify, auth
    } finally {
      await rx.server.stop();
      await rx.server.cleanup();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

Deno.test("tls_ca_file: resolved against cwd, an unreadable or non-PEM file is a config error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-ca-cfg-" });
  try {
    const pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    await Deno.writeTextFile(`${dir}/ca.pem`, pem);
    await Deno.writeTextFile(`${dir}/junk.pem`, "not a certificate\n");
    const base = `spool_dir = "${dir}/spool"\n`;
    const c = parseConfig(
      `${base}[delivery]\ntls_ca_file = "ca.pem"\n` +
        `[[route]]\ndomain = "a.test"\ntype = "smtp"\nhost = "mx.a.test:25"\ntls = "verify"\ntls_ca_file = "ca.pem"\n`,
      "t.toml",
      { cwd: dir },
    );
    assert.equal(c.delivery.tlsCaFile, `${dir}/ca.pem`);
    const dest = c.routes[0].destination;
    assert.equal(dest.kind === "smtp" ? dest.tlsCaFile : null, `${dir}/ca.pem`);
    for (const [file, why] of [["missing.pem", /readable PEM/], ["junk.pem", /CERTIFICATE/]]) {
      assert.throws(
        () => parseConfig(`${base}[delivery]\ntls_ca_file = "${file}"\n`, "t.toml", { cwd: dir }),
        (e: unknown) =>
          e instanceof ConfigError && /delivery\.tls_ca_file/.test(e.message) &&
          (why as RegExp).test(e.message),
      );
      assert.throws(
        () =>
          parseConfig(
            `${base}[[route]]\ndomain = "a.test"\ntype = "smtp"\nhost = "h:25"\ntls_ca_file = "${file}"\n`,
            "t.toml",
            { cwd: dir },
          ),
        (e: unknown) => e instanceof ConfigError && /route\[0\]\.tls_ca_file/.test(e.message),
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A scripted server on a Wire: replies to each command line from `answer`,
 * records what the client sent. remoteAddress is what the session sees.
 */
class ScriptWire implements Wire {
  sent: string[] = [];
  #out: Uint8Array[] = [new TextEncoder().encode("220 test ESMTP\r\n")];
  #closed = false;
  #wake: (() => void) | null = null;
  constructor(readonly remoteAddress: string, private answer: (cmd: string) => string) {}
  get closed(): boolean {
    return this.#closed;
  }
  async read(timeoutMs: number): Promise<Uint8Array | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.#out.length === 0 && !this.#closed && Date.now() < deadline) {
      await new Promise<void>((r) => {
        this.#wake = r;
        setTimeout(r, 50);
      });
    }
    return this.#out.shift() ?? null;
  }
  write(data: Uint8Array | string): Promise<void> {
    const text = typeof data === "string" ? data : new TextDecoder().decode(data);
    for (const line of text.split("\r\n").filter((l) => l !== "")) {
      this.sent.push(line);
      this.#out.push(new TextEncoder().encode(this.answer(line)));
    }
    this.#wake?.();
    return Promise.resolve();
  }
  destroy(): void {
    this.#closed = true;
    this.#wake?.();
  }
}

function authServer(cmd: string): string {
  if (/^EHLO /.test(cmd)) return "250-test\r\n250 AUTH LOGIN\r\n";
  if (cmd === "AUTH LOGIN") return "334 VXNlcm5hbWU6\r\n";
  if (cmd === btoa("alice")) return "334 UGFzc3dvcmQ6\r\n";
  if (cmd === btoa("pw")) return "235 2.7.0 Authentication successful\r\n";
  if (cmd === "QUIT") return "221 2.0.0 Bye\r\n";
  return "535 5.7.8 Authentication credentials invalid\r\n";
}

const OPTS = {
  helo: "client.test",
  authUser: "alice",
  authPassword: "pw",
  replyTimeoutMs: 2000,
  relay: "test[x]:25",
};

Deno.test("AUTH without TLS: refused to a non-loopback peer, LOGIN allowed on loopback", async () => {
  // A network peer without TLS: no AUTH command at all, deferred 4.7.0.
  for (const addr of ["192.0.2.1", "::ffff:127.0.0.1", ""]) {
    const wire = new ScriptWire(addr, authServer);
    const end = await SmtpSession.open(wire, { ...OPTS, tls: "none" }).then(
      () => null,
      (e) => e,
    );
    assert.ok(end instanceof SessionEnd, `${addr}: ${end}`);
    assert.equal(end.outcome, "deferred");
    assert.equal(end.dsn, "4.7.0");
    assert.match(end.message, /AUTH needs TLS/);
    assert.ok(!wire.sent.some((l) => /^AUTH/.test(l)), `${addr}: ${wire.sent}`);
    assert.ok(!wire.sent.includes(btoa("pw")));
  }
  // Loopback: AUTH LOGIN (the server offers no PLAIN) runs user, then password.
  for (const addr of ["127.0.0.1", "::1"]) {
    const wire = new ScriptWire(addr, authServer);
    const s = await SmtpSession.open(wire, { ...OPTS, tls: "none" });
    assert.deepEqual(wire.sent.slice(1), ["AUTH LOGIN", btoa("alice"), btoa("pw")]);
    await s.quit();
  }
});
