/**
 * Session hardening against a real server: early talkers, connections per
 * IP, unknown and unauthenticated command caps, the whole-session
 * deadline, AUTH in plaintext only where allowed (loopback), failed AUTH
 * throttled per client and logged, and require_auth.
 */
import assert from "node:assert/strict";
import { hashPassword } from "../lib/auth/credentials.ts";
import { encodeBase64Text } from "../lib/auth/sasl.ts";
import { freePort, RawClient, SkiffServer } from "./harness.ts";

const plain = (user: string, pass: string) => encodeBase64Text(`\0${user}\0${pass}`);

Deno.test({
  name: "hardening: greeting, connection caps, command caps, deadline, AUTH throttle",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const dir = await Deno.makeTempDir({ prefix: "skiff-hard-" });
    const [pause, sub, short] = [await freePort(), await freePort(), await freePort()];
    // A cheap hash (the file's own cost parameters): the test is about the
    // throttle, and a full-cost scrypt takes seconds on a loaded machine.
    const hash = await hashPassword("right", { N: 1024, r: 8, p: 1 });
    await Deno.writeTextFile(`${dir}/creds`, `alice:${hash}\n`);
    const server = await SkiffServer.start({
      dir,
      toml: `[[listener]]
address = "127.0.0.1:${pause}"
limits = { greet_pause = 1 }
[[listener]]
address = "127.0.0.1:${sub}"
auth = "sasl"
auth_plaintext = true
require_auth = true
limits = { unauthenticated_commands = 6 }
[[listener]]
address = "127.0.0.1:${short}"
limits = { session_timeout = 2 }
[auth]
credentials = "${dir}/creds"
max_failures = 2
[limits]
connections_per_ip = 2
unknown_commands = 3
`,
    });
    const greet = async (c: RawClient) => assert.match((await c.reply())![0], /^220 /);
    try {
      await t.step("a client that talks before the greeting gets 554", async () => {
        const c = await RawClient.connect(pause);
        await c.line("EHLO early.test");
        assert.match((await c.reply())![0], /^554 5\.7\.1/);
        assert.ok(await c.closed());
        await server.waitForLog(/reject client=127\.0\.0\.1 reason="talked before the greeting"/);
      });
      await t.step("connections per IP are capped", async () => {
        const a = await RawClient.connect(server.port);
        const b = await RawClient.connect(server.port);
        await greet(a);
        await greet(b);
        const c = await RawClient.connect(server.port);
        assert.match(
          (await c.reply())![0],
          /^421 4\.3\.2 .*too many connections from your address/,
        );
        a.close();
        b.close();
        c.close();
      });
      await t.step("unknown commands are capped", async () => {
        const c = await RawClient.connect(server.port);
        await greet(c);
        for (let i = 0; i < 3; i++) {
          await c.line(`XYZZY${i}`);
          assert.match((await c.reply())![0], /^500 5\.5\.2/);
        }
        await c.line("XYZZY");
        assert.match((await c.reply())![0], /^421 4\.7\.0 .*unknown commands/);
        assert.ok(await c.closed());
      });
      await t.step("the whole session has a deadline", async () => {
        // Its own listener: a 2 s deadline on the others would race their steps under load.
        const c = await RawClient.connect(short);
        await greet(c);
        let last = "";
        for (let i = 0; i < 100 && !last.startsWith("421"); i++) {
          await c.line("NOOP");
          last = (await c.reply())?.[0] ?? "closed";
          if (!last.startsWith("421")) await new Promise((r) => setTimeout(r, 100));
        }
        assert.match(last, /^421 4\.4\.2 .*session time limit/);
        c.close();
      });
      await t.step("require_auth, AUTH on loopback plaintext, failures throttled", async () => {
        const c = await RawClient.connect(sub);
        await greet(c);
        await c.line("EHLO client.test");
        assert.ok((await c.reply())!.some((l) => l.includes("AUTH PLAIN LOGIN")));
        await c.line("MAIL FROM:<alice@localhost>");
        assert.match((await c.reply())![0], /^530 5\.7\.0/);
        for (let i = 0; i < 2; i++) {
          await c.line(`AUTH PLAIN ${plain("alice", "wrong")}`);
          assert.match((await c.reply())![0], /^535 5\.7\.8/);
        }
        // Over max_failures: refused without a check, even with the right password.
        await c.line(`AUTH PLAIN ${plain("alice", "right")}`);
        assert.match((await c.reply())![0], /^454 4\.7\.0/);
        await server.waitForLog(
          /auth failed client=127\.0\.0\.1 user=alice mechanism=PLAIN failures=2/,
        );
        c.close();
      });
      await t.step("commands before AUTH are capped on a require_auth listener", async () => {
        const c = await RawClient.connect(sub);
        await greet(c);
        let last = "";
        for (let i = 0; i < 8 && !last.startsWith("421"); i++) {
          await c.line("NOOP");
          last = (await c.reply())?.[0] ?? "closed";
        }
        assert.match(last, /^421 4\.7\.0 .*before AUTH/);
        c.close();
      });
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});
