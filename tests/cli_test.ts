/**
 * The command line: config errors name the file and key and exit 78;
 * check-config prints the effective config; version and help; unknown
 * commands exit 64; sendmail submits to a running skiff (through the
 * maildrop, which the manager watches, when no submission socket is configured).
 */
import assert from "node:assert/strict";
import { maildirFiles, runSkiff, SkiffServer, waitFor } from "./harness.ts";

Deno.test("a bad config file gives the named-key error and exit 78", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bad.toml`;
    await Deno.writeTextFile(path, `[limits]\nrecipients = "ten"\n`);
    const r = await runSkiff(["--config", path, "check-config"]);
    assert.equal(r.code, 78, r.stderr);
    assert.match(r.stderr, /bad\.toml/);
    assert.match(r.stderr, /limits\.recipients/);
    assert.match(r.stderr, /"ten"/);
    const r2 = await runSkiff(["--config", `${dir}/missing.toml`, "serve"]);
    assert.equal(r2.code, 78, r2.stderr);
    await Deno.writeTextFile(path, `[limits\n`);
    const r3 = await runSkiff(["--config", path, "check-config"]);
    assert.equal(r3.code, 78, r3.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-config prints the embedded default", async () => {
  const r = await runSkiff(["check-config"], { env: { SKIFF_CONFIG: "" } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /127\.0\.0\.1:2525/);
  assert.match(r.stdout, /localhost/);
});

Deno.test("version, help and an unknown command", async () => {
  const v = await runSkiff(["version"]);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^skiff \d+\.\d+\.\d+/);
  const h = await runSkiff(["help"]);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /serve/);
  const u = await runSkiff(["frobnicate"]);
  assert.equal(u.code, 64);
  assert.match(u.stderr, /unknown command "frobnicate"/);
});

Deno.test({
  name: "skiff sendmail submits to a running skiff (-t reads recipients, Bcc removed)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const server = await SkiffServer.start();
    try {
      const msg =
        "To: erin@localhost\nBcc: frank@localhost\nSubject: via sendmail\n\nhello from sendmail\n";
      const r = await runSkiff([
        "--config",
        server.configPath,
        "sendmail",
        "-t",
        "-i",
        "-f",
        "root@localhost",
      ], {
        stdin: msg,
        // No submission socket in this config: the message goes through the
        // maildrop (./var/maildrop, relative like the server's, hence the cwd),
        // which the running manager watches.
        cwd: server.dir,
      });
      assert.equal(r.code, 0, r.stderr);
      for (const user of ["erin", "frank"]) {
        const files = await waitFor(
          async () => {
            const f = await maildirFiles(`${server.dir}/mail/${user}`);
            return f.length > 0 ? f : null;
          },
          20_000,
          `delivery to ${user}`,
        );
        const text = await Deno.readTextFile(files[0]);
        assert.match(text, /Subject: via sendmail/);
        assert.doesNotMatch(text, /^Bcc:/m);
        assert.match(text, /^Return-Path: <root@localhost>/);
        assert.match(text, /^Message-ID: </m);
        assert.match(text, /^Date: /m);
      }
      const bad = await runSkiff(["--config", server.configPath, "sendmail", "-Z"], { stdin: "" });
      assert.equal(bad.code, 64);
      assert.match(bad.stderr, /Unknown option -Z/);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});

Deno.test("queue show names a bad id; a second serve names the pid holding the spool lock", async () => {
  const server = await SkiffServer.start();
  try {
    const show = await runSkiff(["--config", server.configPath, "queue", "show", "NOTANID"]);
    assert.equal(show.code, 64, show.stderr);
    assert.match(show.stderr, /"NOTANID" is not a queue id/);
    const second = await runSkiff(["--config", server.configPath, "serve"]);
    assert.equal(second.code, 75, second.stderr);
    assert.match(second.stderr, new RegExp(`another manager \\(pid ${server.pid}\\) holds`));
  } finally {
    await server.stop();
    await server.cleanup();
  }
});
