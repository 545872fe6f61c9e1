/**
 * The ESMTP extensions and LMTP against real clients: swaks (plain,
 * PIPELINING, LMTP over a unix socket), Python's smtplib (SMTPUTF8,
 * 8BITMIME, DSN parameters stored in the control file) and a raw Python
 * LMTP client that checks one reply per accepted recipient.
 */
import assert from "node:assert/strict";
import { freePort, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { run } from "./run_cmd.ts";

const PY = PEERS.python3.bin;

async function withServer(
  opts: Parameters<typeof SkiffServer.start>[0],
  fn: (s: SkiffServer) => Promise<void>,
): Promise<void> {
  const server = await SkiffServer.start(opts);
  try {
    await fn(server);
  } finally {
    await server.stop();
    await server.cleanup();
  }
}

/** The control journal (envelope line) of a queued message. */
async function envelopeOf(server: SkiffServer, id: string): Promise<Record<string, unknown>> {
  const text = await Deno.readTextFile(`${server.dir}/spool/queue/${id}`);
  const line = text.split("\n").find((l) => l.startsWith('{"t":"envelope"'));
  assert.ok(line, "envelope record");
  return JSON.parse(line);
}

peerTest("swaks: plain and pipelined submissions", [PEERS.swaks], async () => {
  await withServer({}, async (server) => {
    const base = [PEERS.swaks.bin, "--server", `127.0.0.1:${server.port}`, "--to", "bob@localhost"];
    const plain = await run([...base, "--from", "alice@example.org"]);
    assert.equal(plain.code, 0, plain.out);
    const piped = await run([...base, "--from", "carol@example.org", "--pipeline"]);
    assert.equal(piped.code, 0, piped.out);
    assert.match(piped.out, /PIPELINING/);
    await server.waitForLog(/received id=\w+ from=<carol@example\.org>/);
  });
});

peerTest("smtplib: SMTPUTF8, 8BITMIME and DSN parameters reach the control file", [
  PEERS.python3,
], async () => {
  await withServer({}, async (server) => {
    // A non-local recipient stays queued (no relayhost), so the control file can be read.
    const script = `
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", ${server.port})
s.ehlo("client.test")
assert s.has_extn("smtputf8") and s.has_extn("dsn") and s.has_extn("8bitmime"), s.esmtp_features
msg = "Subject: caf\\u00e9\\r\\n\\r\\nbody \\u00fcber\\r\\n".encode("utf-8")
s.sendmail("j\\u00f6ran@example.org", ["b\\u00fccher@example.net"], msg,
  mail_options=["SMTPUTF8", "BODY=8BITMIME", "RET=HDRS", "ENVID=env+2B1"],
  rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=utf-8;b\\u00fccher@example.net"])
s.quit()
`;
    const r = await run([PY, "-c", script]);
    assert.equal(r.code, 0, r.out);
    const m = await server.waitForLog(/received id=(\w+) from=<jöran@example\.org>/);
    const env = await envelopeOf(server, m[1]);
    assert.deepEqual(env.params, {
      BODY: "8BITMIME",
      SMTPUTF8: "yes",
      RET: "HDRS",
      ENVID: "env+1",
    });
    assert.deepEqual(env.recipients, [{
      address: "bücher@example.net",
      notify: ["SUCCESS", "FAILURE"],
      orcpt: "utf-8;bücher@example.net",
    }]);
    assert.equal(env.protocol, "UTF8SMTP");
  });
});

peerTest("LMTP: one reply per accepted recipient, over TCP and a unix socket", [
  PEERS.python3,
  PEERS.swaks,
], async () => {
  const lmtpPort = await freePort();
  const dir = await Deno.makeTempDir({ prefix: "skiff-lmtp-" });
  const sock = `${dir}/lmtp.sock`;
  await withServer({
    dir,
    top: "relay_networks = []",
    toml: `[[listener]]
address = "127.0.0.1:${lmtpPort}"
protocol = "lmtp"
[[listener]]
address = "unix:${sock}"
protocol = "lmtp"
`,
  }, async (server) => {
    // smtplib.LMTP reads one reply after DATA, so the two-recipient case is a raw socket.
    const script = `
import socket
s = socket.create_connection(("127.0.0.1", ${lmtpPort}))
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        lines.append(l.strip())
        if l[3] == " ": return lines
print(reply())
s.sendall(b"EHLO x\\r\\n"); print(reply())
s.sendall(b"LHLO client.test\\r\\n"); print(reply())
s.sendall(b"MAIL FROM:<a@example.org>\\r\\n"); print(reply())
s.sendall(b"RCPT TO:<good@localhost>\\r\\n"); print(reply())
s.sendall(b"RCPT TO:<bad@example.net>\\r\\n"); print(reply())
s.sendall(b"RCPT TO:<also@localhost>\\r\\n"); print(reply())
s.sendall(b"DATA\\r\\n"); print(reply())
s.sendall(b"Subject: lmtp\\r\\n\\r\\nhi\\r\\n.\\r\\n")
print("R1", reply()); print("R2", reply())
s.sendall(b"QUIT\\r\\n"); print("Q", reply())
`;
    const r = await run([PY, "-c", script]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /^\['220 localhost LMTP skiff'\]$/m);
    assert.match(r.out, /'500 5\.5\.1 Error: use LHLO'/);
    assert.match(r.out, /554 5\.7\.1 <bad@example\.net>: Relay access denied/);
    assert.match(r.out, /^R1 \['250 2\.1\.5 <good@localhost> Ok: queued as \w+'\]$/m);
    assert.match(r.out, /^R2 \['250 2\.1\.5 <also@localhost> Ok: queued as \w+'\]$/m);
    assert.match(r.out, /^Q \['221 2\.0\.0 Bye'\]$/m);
    // swaks speaks LMTP over the unix socket, smtplib.LMTP over TCP.
    const sw = await run([
      PEERS.swaks.bin,
      "--socket",
      sock,
      "--protocol",
      "LMTP",
      "--from",
      "a@example.org",
      "--to",
      "carol@localhost",
    ]);
    assert.equal(sw.code, 0, sw.out);
    const py = await run([
      PY,
      "-c",
      `import smtplib
s = smtplib.LMTP("127.0.0.1", ${lmtpPort})
s.sendmail("a@example.org", ["dave@localhost"], b"Subject: x\\r\\n\\r\\nhi\\r\\n")
s.quit()`,
    ]);
    assert.equal(py.code, 0, py.out);
    await waitFor(
      () => {
        const n = (server.log.match(/received id=/g) ?? []).length;
        return n >= 3;
      },
      10_000,
      "three messages received",
    );
    assert.match(server.log, /received id=\w+ from=<a@example\.org> size=\d+ nrcpt=2/);
  });
});
