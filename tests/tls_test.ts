/**
 * STARTTLS (RFC 3207) and implicit TLS (RFC 8314) against real clients:
 * swaks and `openssl s_client`; plaintext pipelined after STARTTLS is never
 * executed (CVE-2011-0411); TLS version and cipher reach the Received
 * header; SIGHUP reloads the certificate; AUTH PLAIN/LOGIN only under TLS.
 */
import assert from "node:assert/strict";
import { hashPassword } from "../lib/auth/credentials.ts";
import { freePort, maildirFiles, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { run } from "./run_cmd.ts";
import { makeCerts } from "./certs.ts";

export { makeCerts };

const OPENSSL = PEERS.openssl.bin;

/** A server with a STARTTLS listener and an implicit-TLS one, both with SASL, and a user. */
async function tlsServer(): Promise<{ server: SkiffServer; starttls: number; implicit: number }> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-tls-" });
  await makeCerts(dir);
  const [starttls, implicit] = [await freePort(), await freePort()];
  const pass = await hashPassword("s3cret pass");
  await Deno.writeTextFile(`${dir}/credentials`, `# test users\nalice:${pass}\n`);
  const tls = (port: number, mode: string) =>
    `[[listener]]
address = "127.0.0.1:${port}"
tls = "${mode}"
tls_cert = "${dir}/cert.pem"
tls_key = "${dir}/key.pem"
auth = "sasl"
`;
  const server = await SkiffServer.start({
    dir,
    top: "relay_networks = []",
    toml: `${tls(starttls, "starttls")}${tls(implicit, "implicit")}
[auth]
credentials = "${dir}/credentials"
max_failures = 3
`,
  });
  return { server, starttls, implicit };
}

peerTest("STARTTLS and implicit TLS with swaks and openssl s_client; AUTH under TLS", [
  PEERS.swaks,
  PEERS.openssl,
], async () => {
  const { server: restarted, starttls, implicit } = await tlsServer();
  const dir0 = restarted.dir;
  try {
    const swaks = [PEERS.swaks.bin, "--to", "bob@localhost", "--from", "alice@example.org"];
    // STARTTLS, then AUTH PLAIN and LOGIN, then relaying as the authenticated user.
    for (const mech of ["PLAIN", "LOGIN"]) {
      const r = await run([
        ...swaks,
        "--server",
        `127.0.0.1:${starttls}`,
        "--tls",
        "--auth",
        mech,
        "--auth-user",
        "alice",
        "--auth-password",
        "s3cret pass",
        "--to",
        "far@example.net",
        "--from",
        "alice@localhost",
      ]);
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /235 2\.7\.0/);
    }
    // AUTH is not offered before STARTTLS, and refused with 538 if tried.
    const plain = await run([
      ...swaks,
      "--server",
      `127.0.0.1:${starttls}`,
      "--auth",
      "PLAIN",
      "--auth-user",
      "alice",
      "--auth-password",
      "s3cret pass",
    ]);
    assert.notEqual(plain.code, 0);
    // A wrong password: 535, logged.
    const wrong = await run([
      ...swaks,
      "--server",
      `127.0.0.1:${starttls}`,
      "--tls",
      "--auth",
      "LOGIN",
      "--auth-user",
      "alice",
      "--auth-password",
      "nope",
    ]);
    assert.match(wrong.out, /535 5\.7\.8/);
    await restarted.waitForLog(/auth failed .*user=alice/);
    // Implicit TLS (swaks --tlsc), with the TLS version and cipher in Received.
    const imp = await run([...swaks, "--server", `127.0.0.1:${implicit}`, "--tlsc"]);
    assert.equal(imp.code, 0, imp.out);
    const file = await waitFor(
      async () => (await maildirFiles(`${restarted.dir}/mail/bob`))[0],
      10_000,
      `bob's mail; log:\n${restarted.log}`,
    );
    const text = await Deno.readTextFile(file);
    assert.match(text, /\(using TLSv1\.[23] with cipher \S+\)/);
    assert.match(text, /with ESMTPS id/);
    // openssl s_client -starttls smtp, and a plain TLS connection to the implicit port.
    const s1 = await run([
      OPENSSL,
      "s_client",
      "-starttls",
      "smtp",
      "-connect",
      `127.0.0.1:${starttls}`,
      "-CAfile",
      `${dir0}/ca.pem`,
      "-verify_return_error",
      "-quiet",
    ], "EHLO client.test\r\nQUIT\r\n");
    assert.match(s1.out, /250-AUTH PLAIN LOGIN|250-localhost/);
    assert.match(s1.out, /221 2\.0\.0/);
    const s2 = await run([
      OPENSSL,
      "s_client",
      "-connect",
      `127.0.0.1:${implicit}`,
      "-CAfile",
      `${restarted.dir}/ca.pem`,
      "-verify_return_error",
      "-quiet",
    ], "EHLO client.test\r\nQUIT\r\n");
    assert.match(s2.out, /220 localhost ESMTP skiff/);
    assert.match(s2.out, /AUTH PLAIN LOGIN/);
  } finally {
    await restarted.stop();
    await restarted.cleanup();
  }
});

peerTest("plaintext pipelined after STARTTLS is discarded; SIGHUP reloads the certificate", [
  PEERS.python3,
  PEERS.openssl,
], async () => {
  const { server, starttls } = await tlsServer();
  try {
    // CVE-2011-0411: "STARTTLS\r\nMAIL FROM:..." in one packet. If the MAIL were
    // executed after the handshake, RCPT would get 250 (or a stray reply would appear).
    const script = `
import socket, ssl
s = socket.create_connection(("127.0.0.1", ${starttls}))
f = s.makefile("rb")
def reply(f):
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.strip())
        if l[3] == " ": return lines
reply(f)
s.sendall(b"EHLO client.test\\r\\n"); reply(f)
s.sendall(b"STARTTLS\\r\\nMAIL FROM:<evil@example.org>\\r\\n")
print("STARTTLS", reply(f))
ctx = ssl.create_default_context(cafile="${server.dir}/ca.pem")
t = ctx.wrap_socket(s, server_hostname="localhost")
g = t.makefile("rb")
t.sendall(b"EHLO client.test\\r\\n"); print("EHLO", reply(g))
t.sendall(b"RCPT TO:<bob@localhost>\\r\\n"); print("RCPT", reply(g))
t.sendall(b"QUIT\\r\\n"); print("QUIT", reply(g))
`;
    const r = await run([PEERS.python3.bin, "-c", script]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^STARTTLS \['220 2\.0\.0 Ready to start TLS'\]$/m);
    assert.match(r.out, /^EHLO \[.*'250.AUTH PLAIN LOGIN'/m);
    assert.doesNotMatch(r.out, /250.STARTTLS'/); // not offered twice
    assert.match(r.out, /^RCPT \['503 5\.5\.1 Error: need MAIL command'\]$/m);
    assert.match(r.out, /^QUIT \['221 2\.0\.0 Bye'\]$/m);
    await server.waitForLog(/plaintext after STARTTLS discarded .*bytes=30/);
    // SIGHUP: a new certificate (another CN) is served to new connections.
    await makeCerts(server.dir, "reloaded.test");
    server.kill("SIGHUP");
    await server.waitForLog(/reloaded certificates=2/);
    const s = await run([
      OPENSSL,
      "s_client",
      "-starttls",
      "smtp",
      "-connect",
      `127.0.0.1:${starttls}`,
      "-CAfile",
      `${server.dir}/ca.pem`,
      "-verify_return_error",
    ], "QUIT\r\n");
    assert.match(s.out, /subject=CN ?= ?reloaded\.test/);
  } finally {
    await server.stop();
    await server.cleanup();
  }
});
