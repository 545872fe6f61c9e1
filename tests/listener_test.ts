/**
 * Listeners: a unix submission socket with peer credentials (a client
 * running as nobody is identified as uid 65534 by the kernel and may send
 * only as nobody@<hostname>), several listeners in one process, and a
 * listener that cannot bind stopping start-up with a clear message.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { freePort, runSkiff, SkiffServer } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { run } from "./run_cmd.ts";

const AS_NOBODY = [PEERS.setpriv.bin, "--reuid=65534", "--regid=65534", "--clear-groups"];

peerTest(
  "unix submission socket: peercred identifies nobody, who may send only as itself",
  [PEERS.swaks, PEERS.setpriv],
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-unix-" });
    await Deno.chmod(dir, 0o755); // nobody must reach the socket
    const sock = `${dir}/run/submit.sock`;
    const server = await SkiffServer.start({
      dir,
      toml: `[[listener]]
address = "unix:${sock}"
mode = "0666"
auth = "peercred"
`,
    });
    try {
      assert.equal((await Deno.lstat(sock)).mode! & 0o777, 0o666);
      const swaks = [
        PEERS.swaks.bin,
        "--socket",
        sock,
        "--helo",
        "client",
        "--to",
        "bob@localhost",
      ];
      // Own address: accepted, and the envelope names the kernel's uid.
      const ok = await run([...AS_NOBODY, ...swaks, "--from", "nobody@localhost"]);
      assert.equal(ok.code, 0, ok.out);
      const m = await server.waitForLog(/received id=(\w+) from=<nobody@localhost>.*auth=nobody/);
      assert.ok(m[1]);
      // Another user's address: refused at MAIL with 553 5.7.1.
      const bad = await run([...AS_NOBODY, ...swaks, "--from", "root@localhost"]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.out, /553 5\.7\.1/);
      // A peercred client may relay (a trusted local peer).
      const relay = await run([
        ...AS_NOBODY,
        ...swaks,
        "--from",
        "nobody@localhost",
        "--to",
        "x@example.net",
      ]);
      assert.equal(relay.code, 0, relay.out);
      // root (the test runner) may use any sender.
      const root = await run([...swaks, "--from", "anyone@example.org"]);
      assert.equal(root.code, 0, root.out);
      await server.waitForLog(/received id=\w+ from=<anyone@example\.org>.*auth=root/);
    } finally {
      await server.stop();
      await server.cleanup();
    }
    await Deno.lstat(sock).then(
      () => assert.fail("socket file left behind"),
      () => {},
    );
  },
);

Deno.test("a listener that cannot bind stops start-up with its address named", async () => {
  const dir = await Deno.makeTempDir({ prefix: "skiff-bind-" });
  const busy = net.createServer();
  const port = await freePort();
  await new Promise<void>((r) => busy.listen({ host: "127.0.0.1", port }, r));
  try {
    await Deno.writeTextFile(`${dir}/notasocket`, "x");
    const other = await freePort();
    const conf = (second: string) =>
      Deno.writeTextFile(
        `${dir}/skiff.toml`,
        `spool_dir = "${dir}/spool"\n[[listener]]\naddress = "[::1]:${other}"\n` +
          `[[listener]]\naddress = "${second}"\n`,
      );
    await conf(`unix:${dir}/notasocket`);
    let r = await runSkiff(["--config", `${dir}/skiff.toml`, "serve"], { cwd: dir });
    assert.equal(r.code, 69, r.stderr);
    assert.match(r.stderr, /Cannot listen on unix:.*notasocket: it exists and is not a socket/);
    await conf(`127.0.0.1:${port}`);
    r = await runSkiff(["--config", `${dir}/skiff.toml`, "serve"], { cwd: dir });
    assert.equal(r.code, 69, r.stderr);
    assert.match(r.stderr, new RegExp(`Cannot listen on 127\\.0\\.0\\.1:${port}: .*`));
  } finally {
    busy.close();
    await Deno.remove(dir, { recursive: true });
  }
});
