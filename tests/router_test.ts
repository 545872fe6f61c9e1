/**
 * Router decisions that matter for safety: mbox mailboxes are files named
 * after the recipient inside the configured directory (never a path out of
 * it), and file and command targets of an alias or .forward carry the user
 * they run as, so a .forward can never make skiff write a file as root.
 */
import assert from "node:assert/strict";
import { parseAliases } from "../lib/route/aliases.ts";
import { encodeSpecial, PROTOCOL_ALIAS, route, type RouterContext } from "../lib/route/router.ts";
import { testConfig } from "./delivery_peers.ts";
import { parseConfig } from "../lib/config/load.ts";

const ctx: RouterContext = { aliases: new Map(), readFile: () => null, root: false };

Deno.test("mbox: one file per recipient in the directory; names that escape it fail 5.1.1", () => {
  const cfg = testConfig(
    "/srv/t",
    `[delivery]\nlocal_mailbox = "mbox"\nmbox_dir = "/var/mail"\n` +
      `[[route]]\ndomain = "boxes.test"\ntype = "mbox"\npath = "/srv/boxes"\n`,
  );
  const local = route(cfg, ctx, "Carol@localhost");
  assert.equal(local.type, "deliver");
  assert.deepEqual(local.type === "deliver" && local.destination, {
    kind: "mbox",
    path: "/var/mail/carol",
    user: null,
  });
  const routed = route(cfg, ctx, "dave@boxes.test");
  assert.equal(
    routed.type === "deliver" && routed.destination.kind === "mbox" &&
      routed.destination.path,
    "/srv/boxes/dave",
  );
  for (const bad of ["../../etc/passwd@localhost", "..@boxes.test", "a/b@localhost"]) {
    const r = route(cfg, ctx, bad);
    assert.equal(r.type, "fail", bad);
    assert.equal(r.type === "fail" && r.dsn, "5.1.1", bad);
  }
});

Deno.test("alias file and command targets run as the expansion's user, never as root", () => {
  const cfg = testConfig("/srv/t", "");
  const nobody = { name: "nobody", uid: 65534, gid: 65534 };
  const [file, cmd] = parseAliases("x: /home/u/saved, |/usr/bin/logger -t mail\n").get("x")!;
  assert.equal(file.kind, "file");
  const encFile = encodeSpecial({ kind: "file", path: "/home/u/saved" }, nobody);
  const r = route(cfg, ctx, encFile, PROTOCOL_ALIAS);
  assert.equal(r.type, "deliver");
  if (r.type === "deliver") {
    assert.deepEqual(r.destination, {
      kind: "mbox",
      path: "/home/u/saved",
      user: nobody,
      file: true,
    });
    assert.deepEqual(r.runAs, nobody);
  }
  assert.equal(cmd.kind, "pipe");
  const encCmd = encodeSpecial(
    { kind: "pipe", command: ["/usr/bin/logger", "-t", "mail"] },
    nobody,
  );
  const c = route(cfg, ctx, encCmd, PROTOCOL_ALIAS);
  assert.ok(c.type === "deliver" && c.destination.kind === "pipe");
  assert.deepEqual(c.type === "deliver" && c.runAs, nobody);
  // The special forms mean nothing outside an ALIAS message: an SMTP client cannot ask for them.
  const smtp = route(cfg, ctx, encFile, "ESMTP");
  assert.ok(!(smtp.type === "deliver" && ["mbox", "pipe"].includes(smtp.destination.kind)));
});

Deno.test("pipe routes and alias targets without user= run as default_privs when root, never root", () => {
  const rootCtx: RouterContext = { ...ctx, root: true };
  const cmd = '["/usr/bin/true"]';
  const cfg = testConfig(
    "/srv/t",
    `[delivery]\ndefault_privs = "nobody"\n[[route]]\ndomain = "pipe.test"\ntype = "pipe"\ncommand = ${cmd}\n`,
  );
  const r = route(cfg, rootCtx, "x@pipe.test");
  assert.ok(r.type === "deliver" && r.destination.kind === "pipe");
  assert.deepEqual(r.type === "deliver" && r.runAs, { name: "nobody", uid: 65534, gid: 65534 });
  // Not root: nothing to switch to, skiff's own user.
  const mine = route(cfg, ctx, "x@pipe.test");
  assert.equal(mine.type === "deliver" && mine.runAs, null);
  // A command expanded while skiff was not root is still never run as root later.
  const enc = encodeSpecial({ kind: "pipe", command: ["/usr/bin/true"] }, null, "bob@localhost");
  const later = route(cfg, rootCtx, enc, PROTOCOL_ALIAS);
  assert.equal(later.type === "deliver" && later.runAs?.uid, 65534);
  assert.equal(later.type === "deliver" && later.original, "bob@localhost");
  assert.throws(
    () => testConfig("/srv/t", `[delivery]\ndefault_privs = "root"\n`),
    /default_privs/,
  );
});

Deno.test(".forward is never read by the router: a worker running as the user checks it", () => {
  const cfg = testConfig("/srv/t", `[delivery]\nforward = true\n`);
  let reads = 0;
  const counting: RouterContext = { ...ctx, readFile: () => (reads++, "evil@example.net") };
  const r = route(cfg, counting, "root@localhost");
  assert.equal(reads, 0, "the manager opens no .forward");
  assert.equal(r.type, "deliver");
  if (r.type === "deliver") {
    assert.deepEqual(r.forward, { path: "/root/.forward", owner: 0, deliver: true });
    assert.equal(r.runAs?.uid, 0);
    assert.equal(r.destination.kind, "maildir");
  }
  // After the worker found none: the mailbox, no second check.
  const past = route(cfg, { ...ctx, skipForward: true }, "root@localhost");
  assert.equal(past.type === "deliver" && past.forward, undefined);
});

Deno.test('maildir_root = "~/Maildir": each local user\'s own home, only with local_users', () => {
  const home = (extra: string) =>
    parseConfig(
      `hostname = "skiff.test"\nspool_dir = "/srv/t/spool"\n[local]\nmaildir_root = "~/Maildir"\n` +
        `domains = ["localhost"]\n[delivery]\nnameserver = "127.0.0.1:1"\n${extra}`,
      "test.toml",
    );
  const cfg = home("local_users = true\n");
  const r = route(cfg, ctx, "root@localhost");
  assert.equal(r.type, "deliver");
  if (r.type === "deliver") {
    assert.deepEqual(r.destination, {
      kind: "maildir",
      path: "/root/Maildir",
      user: { name: "root", uid: 0, gid: 0 },
      exact: true,
    });
  }
  assert.throws(() => home(""), /local\.maildir_root.*needs delivery\.local_users/);
  for (const bad of ["~/", "~/../etc", "~root/Maildir", "~/a/./b"]) {
    assert.throws(
      () =>
        parseConfig(
          `[local]\nmaildir_root = ${JSON.stringify(bad)}\n[delivery]\nlocal_users = true\n`,
          "test.toml",
        ),
      /local\.maildir_root/,
      bad,
    );
  }
});
