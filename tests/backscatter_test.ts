/**
 * Unknown local users are refused at RCPT, not accepted and bounced later
 * (issue 9, finding 6: backscatter), wherever skiff can know its users:
 * /etc/passwd with delivery.local_users, the aliases table, and the
 * Maildirs under maildir_root with local.existing_maildirs_only. Without
 * such an authority, or with local.verify_recipients = false, every local
 * part is still taken. Real server, real socket, real /etc/passwd.
 */
import assert from "node:assert/strict";
import { RawClient, SkiffServer } from "./harness.ts";

const UNKNOWN = "nethard-nosuchuser";

/** RCPT replies for each address in one transaction (then RSET, QUIT). */
async function rcptReplies(port: number, addresses: string[]): Promise<string[]> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.line("EHLO backscatter.test");
    await c.reply();
    await c.line("MAIL FROM:<someone@example.org>");
    assert.match((await c.reply())?.at(-1) ?? "", /^250 /);
    const out: string[] = [];
    for (const a of addresses) {
      await c.line(`RCPT TO:<${a}>`);
      out.push((await c.reply())?.at(-1) ?? "(closed)");
    }
    await c.line("QUIT");
    return out;
  } finally {
    c.close();
  }
}

async function withServer(
  toml: (dir: string) => string,
  fn: (s: SkiffServer) => Promise<void>,
  prepare?: (dir: string) => Promise<void>,
  local = "",
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "skiff-backscatter-" });
  await prepare?.(dir);
  const server = await SkiffServer.start({ dir, toml: toml(dir), local });
  try {
    await fn(server);
  } finally {
    await server.stop();
    await server.cleanup();
  }
}

Deno.test("local_users: unknown users get 550 5.1.1 at RCPT; passwd users, aliases and postmaster are taken", async () => {
  await withServer(
    (dir) => `[delivery]\nlocal_users = true\naliases = "${dir}/aliases"\n`,
    async (s) => {
      const r = await rcptReplies(s.port, [
        `${UNKNOWN}@localhost`,
        "root@localhost",
        "ROOT@localhost",
        "info-nethard@localhost",
        "postmaster@localhost",
        "someone@example.net", // not local: relaying from loopback is allowed, not checked here
      ]);
      assert.equal(
        r[0],
        `550 5.1.1 <${UNKNOWN}@localhost>: Recipient address rejected: User unknown in local recipient table`,
      );
      for (const x of r.slice(1)) assert.match(x, /^250 /, r.join("\n"));
      assert.doesNotMatch(s.log, /bounce/);
    },
    (dir) => Deno.writeTextFile(`${dir}/aliases`, "info-nethard: root\n"),
  );
});

Deno.test("verify_recipients = false takes every local user, as before", async () => {
  await withServer(
    () => `[delivery]\nlocal_users = true\n`,
    async (s) => {
      const r = await rcptReplies(s.port, [`${UNKNOWN}@localhost`]);
      assert.match(r[0], /^250 /);
    },
    undefined,
    "verify_recipients = false",
  );
});

Deno.test("existing_maildirs_only: the Maildirs under maildir_root are the users; without it any name is taken", async () => {
  await withServer(
    () => "",
    async (s) => {
      const r = await rcptReplies(s.port, ["alice@localhost", "bob@localhost"]);
      assert.match(r[0], /^250 /);
      assert.match(r[1], /^550 5\.1\.1 <bob@localhost>: Recipient address rejected/);
    },
    (dir) => Deno.mkdir(`${dir}/mail/alice/new`, { recursive: true }),
    "existing_maildirs_only = true",
  );
  // The embedded default makes Maildirs on first delivery: it cannot know, so it refuses nothing.
  await withServer(() => "", async (s) => {
    const r = await rcptReplies(s.port, [`${UNKNOWN}@localhost`]);
    assert.match(r[0], /^250 /);
  });
});
