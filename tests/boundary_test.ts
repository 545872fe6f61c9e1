/**
 * The control socket as a boundary: hostile request lines against a real
 * manager (not JSON, not an object, unknown commands and operations,
 * path-like queue ids, wrong types, an endless line) each get an error
 * reply naming what was wrong, nothing outside the queue is touched, and
 * the manager keeps answering. And as real users: with the manager running
 * as its `user` (started as root), that user's `skiff status` is answered
 * over the socket (0600, the user's), while `nobody` is refused; and SASL
 * (lib/auth/credentials.ts) works for a manager running as that user, with
 * malformed AUTH lines refused.
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { hashPassword } from "../lib/auth/credentials.ts";
import { freePort, RawClient, skiffArgs, SkiffServer } from "./harness.ts";
import { testAccount } from "./privsep_helpers.ts";
import { runCommand } from "./run_cmd.ts";

/** Sends one raw request and reads the manager's whole answer. */
function ask(path: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path }, () => s.write(request));
    let out = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => out += d);
    s.on("close", () => resolve(out.trim()));
    s.on("error", reject);
  });
}

const HOSTILE: [string, RegExp][] = [
  ["hello\n", /"ok":false,"error":"Bad request: .*not valid JSON/],
  ["[1,2]\n", /"ok":false,"error":"Bad request: Request is not an object"/],
  ['{"cmd":"rm"}\n', /"ok":false,"error":"Bad request: Unknown command \\"rm\\""/],
  ['{"cmd":"queue","op":"chmod"}\n', /"error":"Bad request: Unknown queue operation \\"chmod\\""/],
  [
    '{"cmd":"queue","op":"show","select":{"ids":["../../etc/passwd"]}}\n',
    /"ok":false,"error":"Bad request: \\"..\/..\/etc\/passwd\\" is not a queue id"/,
  ],
  [
    '{"cmd":"queue","op":"delete","select":{"ids":["../decoy"]}}\n',
    /"ok":false,"error":"Bad request: \\"..\/decoy\\" is not a queue id"/,
  ],
  [
    '{"cmd":"queue","op":"hold","select":{"domain":7}}\n',
    /"error":"Bad request: Selection domain must be a string"/,
  ],
  ["x".repeat(70_000), /"ok":false,"error":"Request too long"/],
];

Deno.test({
  name:
    "control socket: hostile request lines get errors naming them; nothing outside the queue is touched",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = await SkiffServer.start();
    try {
      const sock = `${server.dir}/spool/control.sock`;
      await Deno.writeTextFile(`${server.dir}/spool/decoy`, "keep me\n");
      for (const [line, expect] of HOSTILE) {
        assert.match(await ask(sock, line), expect, JSON.stringify(line.slice(0, 60)));
      }
      assert.equal(await Deno.readTextFile(`${server.dir}/spool/decoy`), "keep me\n");
      const status = JSON.parse(await ask(sock, '{"cmd":"status"}\n'));
      assert.equal(status.ok, true);
      assert.equal(status.pid, server.pid);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "control socket as real users: the manager's user is answered, nobody is refused",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const mgr = await testAccount("skctlmgr");
    const dir = await Deno.makeTempDir({ prefix: "skiff-control-" });
    await Deno.chmod(dir, 0o755); // the manager's user must reach its spool below
    const server = await SkiffServer.start({ dir, top: `user = "skctlmgr"` });
    try {
      const sock = `${dir}/spool/control.sock`;
      const st = Deno.lstatSync(sock);
      assert.equal(st.uid, mgr.uid);
      assert.equal((st.mode ?? 0) & 0o777, 0o600);
      const as = (uid: number, gid: number) =>
        runCommand([
          "/usr/bin/setpriv",
          `--reuid=${uid}`,
          `--regid=${gid}`,
          "--clear-groups",
          "--",
          Deno.execPath(),
          ...skiffArgs(["--config", server.configPath, "status", "--json"]),
        ], { cwd: "/", env: { HOME: "/" } });
      const own = await as(mgr.uid, mgr.gid);
      assert.equal(own.code, 0, own.stderr);
      const status = JSON.parse(own.stdout);
      assert.equal(status.pid, server.pid); // answered by the manager, over the socket
      assert.equal(status.uid, mgr.uid);
      const other = await as(65534, 65534);
      assert.notEqual(other.code, 0, other.stdout);
      assert.doesNotMatch(other.stdout, new RegExp(`"pid":\\s*${server.pid}`));
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test({
  name: "SASL as the manager's user: a root-only credentials file is read before the switch; " +
    "hostile AUTH lines are refused and the right password still works",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await testAccount("skctlmgr");
    const dir = await Deno.makeTempDir({ prefix: "skiff-sasl-user-" });
    await Deno.chmod(dir, 0o755);
    // A cheap hash (its own cost parameters): the boundary is under test, not scrypt.
    const hash = await hashPassword("right", { N: 1024, r: 8, p: 1 });
    await Deno.writeTextFile(`${dir}/creds`, `alice:${hash}\n`, { mode: 0o600 }); // root's only
    const port = await freePort();
    const server = await SkiffServer.start({
      dir,
      top: `user = "skctlmgr"`,
      toml: `[[listener]]\naddress = "127.0.0.1:${port}"\nauth = "sasl"\nauth_plaintext = true\n` +
        `require_auth = true\n[auth]\ncredentials = "${dir}/creds"\nmax_failures = 20\n`,
    });
    try {
      await server.waitForLog(/privileges=drop/); // the sessions run as skctlmgr, not root
      const c = await RawClient.connect(port);
      const say = async (line: string) => {
        await c.line(line);
        return (await c.reply())!.at(-1)!;
      };
      await c.reply();
      assert.match(await say("EHLO client.test"), /^250 /);
      for (
        const bad of [
          "AUTH PLAIN !!!not-base64!!!",
          `AUTH PLAIN ${btoa("no-nul-separators")}`,
          `AUTH PLAIN ${btoa("\0alice\0right\0extra")}`,
          `AUTH PLAIN ${btoa("\0" + "a".repeat(2000) + "\0right")}`,
          "AUTH CRAM-MD5",
        ]
      ) {
        assert.match(await say(bad), /^5\d\d /, bad.slice(0, 40));
      }
      assert.match(await say(`AUTH PLAIN ${btoa("\0alice\0right")}`), /^235 /);
      assert.match(await say("MAIL FROM:<alice@localhost>"), /^250 /);
      c.close();
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});
