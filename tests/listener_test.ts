/**
 * Listeners: a unix submission socket with peer credentials (a client
 * running as nobody is identified as uid 65534 by the kernel and may send
 * only as nobody@<hostname>), several listeners in one process, and a
 * listener that cannot bind stopping start-up with a clear message.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { ConfigError, describeConfig, parseConfig } from "../lib/config/load.ts";
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

peerTest(
  "a unix listener's owner: the socket is chowned after bind, and mode 0600 admits only that user",
  [PEERS.swaks, PEERS.setpriv],
  async () => {
    if (Deno.uid() !== 0) throw new Error("giving a socket to nobody needs root");
    const dir = await Deno.makeTempDir({ prefix: "skiff-owner-" });
    await Deno.chmod(dir, 0o755); // nobody must reach the socket
    const sock = `${dir}/run/owned.sock`;
    const server = await SkiffServer.start({
      dir,
      toml: `[[listener]]
address = "unix:${sock}"
mode = "0600"
owner = "nobody:nogroup"
`,
    });
    try {
      const st = await Deno.lstat(sock);
      assert.equal(st.uid, 65534);
      assert.equal(st.gid, 65534);
      assert.equal(st.mode! & 0o777, 0o600);
      const swaks = [PEERS.swaks.bin, "--socket", sock, "--to", "bob@localhost"];
      // The owner may connect and send.
      const ok = await run([...AS_NOBODY, ...swaks, "--from", "nobody@localhost"]);
      assert.equal(ok.code, 0, ok.out);
      await server.waitForLog(/received id=\w+ from=<nobody@localhost>/);
      // Any other (non-root) user is refused by the kernel before skiff sees it.
      const other = await run([
        PEERS.setpriv.bin,
        "--reuid=12345",
        "--regid=12345",
        "--clear-groups",
        ...swaks,
        "--from",
        "x@localhost",
      ]);
      assert.notEqual(other.code, 0, other.out);
      assert.match(other.out, /permission denied/i);
      assert.doesNotMatch(server.log, /from=<x@localhost>/);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
);

Deno.test("listener owner: resolved at config time; unknown names and TCP are config errors", () => {
  const conf = (address: string, owner: string) =>
    `[[listener]]\naddress = "${address}"\nowner = "${owner}"\n`;
  const c = parseConfig(conf("unix:/run/skiff/a.sock", "nobody:nogroup"), "skiff.toml");
  assert.deepEqual(c.listeners[0].owner, { text: "nobody:nogroup", uid: 65534, gid: 65534 });
  assert.deepEqual(
    parseConfig(conf("unix:/run/skiff/a.sock", "nobody"), "skiff.toml").listeners[0].owner,
    { text: "nobody", uid: 65534, gid: null },
  );
  assert.deepEqual(
    parseConfig(conf("unix:/run/skiff/a.sock", "120:121"), "skiff.toml").listeners[0].owner,
    { text: "120:121", uid: 120, gid: 121 },
  );
  // check-config shows it, and the shown config parses back the same.
  const text = describeConfig(c);
  assert.match(text, /^owner = "nobody:nogroup"$/m);
  assert.deepEqual(parseConfig(text, "again").listeners[0].owner, c.listeners[0].owner);
  // The default: no owner key at all.
  assert.equal(parseConfig("", "empty").listeners[1].owner, undefined);
  for (
    const [address, owner, why] of [
      ["unix:/run/a.sock", "no-such-user-skiff", /no user "no-such-user-skiff" in \/etc\/passwd/],
      ["unix:/run/a.sock", "nobody:no-such-group", /no group "no-such-group"/],
      ["unix:/run/a.sock", "nobody:", /malformed/],
      ["unix:/run/a.sock", "a:b:c", /malformed/],
      ["unix:/run/a.sock", "bad name", /bad user name/],
      ["127.0.0.1:2525", "nobody", /owner needs a unix socket address/],
    ] as const
  ) {
    assert.throws(() => parseConfig(conf(address, owner), "skiff.toml"), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.key, "listener[0].owner");
      assert.match(e.expected, why);
      return true;
    });
  }
});
