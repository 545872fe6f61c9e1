/**
 * Postfix as a real client of skiff: a private Postfix instance relays mail
 * for skiff.test to skiff's SMTP listener (`relayhost`) and sends mail for
 * lmtp.skiff.test to skiff's LMTP listener (a transport map entry using
 * Postfix's `lmtp` client). skiff accepts both and delivers them into its
 * Maildirs; each file carries the trace of both hops, skiff's on top.
 */
import assert from "node:assert/strict";
import { freePort, maildirFiles, RawClient, SkiffServer, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { PostfixInstance } from "./postfix.ts";

/** Submits one message to Postfix's smtpd; returns Postfix's queue id. */
async function submit(port: number, to: string, subject: string): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    const expect = async (code: string) => {
      const r = await c.reply(10_000);
      assert.ok(r && r[r.length - 1].startsWith(code), `expected ${code}, got ${r?.join(" | ")}`);
      return r!.join("\n");
    };
    await expect("220");
    await c.line("EHLO client.test");
    await expect("250");
    await c.line("MAIL FROM:<sender@client.test>");
    await expect("250");
    await c.line(`RCPT TO:<${to}>`);
    await expect("250");
    await c.line("DATA");
    await expect("354");
    await c.send(
      `From: sender@client.test\r\nTo: ${to}\r\nSubject: ${subject}\r\n\r\n` +
        `Sent through Postfix to skiff.\r\n.\r\n`,
    );
    const done = await expect("250");
    await c.line("QUIT");
    const m = done.match(/queued as (\w+)/);
    assert.ok(m, done);
    return m[1];
  } finally {
    c.close();
  }
}

peerTest(
  "Postfix relays to skiff over SMTP (relayhost) and LMTP (lmtp transport); skiff delivers both",
  [PEERS.postfix],
  async () => {
    const lmtpPort = await freePort();
    const skiff = await SkiffServer.start({
      domains: ["localhost", "skiff.test", "lmtp.skiff.test"],
      toml: `[[listener]]
address = "127.0.0.1:${lmtpPort}"
protocol = "lmtp"
`,
    });
    let postfix: PostfixInstance | null = null;
    try {
      await skiff.waitForLog(new RegExp(`listening address=127\\.0\\.0\\.1:${lmtpPort} .*lmtp`));
      postfix = await PostfixInstance.start({
        mainCf: `relayhost = [127.0.0.1]:${skiff.port}
transport_maps = inline:{lmtp.skiff.test=lmtp:inet:127.0.0.1:${lmtpPort}}
`,
      });
      const viaSmtp = await submit(postfix.port, "alice@skiff.test", "via relayhost");
      const viaLmtp = await submit(postfix.port, "bob@lmtp.skiff.test", "via lmtp");

      // Postfix reports each sent by the right client to the right skiff listener, and
      // skiff's reply names its own queue id, which skiff logged with the protocol.
      const pf = postfix;
      const sent = async (id: string, client: string, port: number, protocol: string) => {
        const re = new RegExp(
          `postfix-skiff-test/${client}\\[\\d+\\]: ${id}: to=<[^>]+>, ` +
            `relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${port}, .*status=sent \\(250 .*queued as (\\w+)\\)`,
        );
        const m = await waitFor(
          async () => (await pf.maillog()).match(re),
          15_000,
          `Postfix's ${client} to deliver ${id}`,
        );
        assert.match(
          skiff.log,
          new RegExp(`received id=${m[1]} from=<sender@client\\.test> .*protocol=${protocol}\\b`),
        );
      };
      await sent(viaSmtp, "smtp", skiff.port, "ESMTP");
      await sent(viaLmtp, "lmtp", lmtpPort, "LMTP");

      // skiff delivered each into its Maildir, with the trace of both hops.
      const delivered = async (user: string) => {
        const files = await waitFor(
          async () => {
            const f = await maildirFiles(`${skiff.dir}/mail/${user}`);
            return f.length > 0 ? f : null;
          },
          15_000,
          `a message in ${user}'s Maildir`,
        );
        assert.equal(files.length, 1);
        return await Deno.readTextFile(files[0]);
      };
      const alice = await delivered("alice");
      const bob = await delivered("bob");
      const trail = (text: string) =>
        text.replace(/\r\n/g, "\n").split("\n\n")[0].split(/\n(?=\S)/)
          .filter((h) => /^Received:/i.test(h));
      for (
        const [text, protocol, postfixId] of [[alice, "ESMTP", viaSmtp], [bob, "LMTP", viaLmtp]]
      ) {
        const received = trail(text);
        assert.equal(received.length, 2, received.join("\n"));
        // Newest first: skiff took it from Postfix, which took it from the client.
        assert.match(
          received[0],
          new RegExp(
            `^Received: from postfix\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\s+by localhost \\(skiff\\) with ${protocol} id `,
          ),
        );
        assert.match(
          received[1],
          new RegExp(
            `^Received: from client\\.test .*\\s+by postfix\\.test \\(Postfix\\) with ESMTP id ${postfixId}`,
            "s",
          ),
        );
      }
      assert.match(alice, /Subject: via relayhost/);
      assert.match(bob, /Subject: via lmtp/);

      assert.match(skiff.log, /connect client=127\.0\.0\.1 listener=lmtp/);
    } catch (err) {
      // Both sides' logs make a failure here explainable.
      const log = await postfix?.maillog() ?? "(Postfix not started)";
      throw new Error(`${(err as Error).message}\n--- Postfix:\n${log}\n--- skiff:\n${skiff.log}`, {
        cause: err,
      });
    } finally {
      await postfix?.stop();
      await skiff.stop();
      if (postfix) {
        assert.equal(postfix.masterPid(), null, "Postfix master still running");
        await postfix.cleanup();
      }
      await skiff.cleanup();
    }
  },
);
