/**
 * scripts/install.sh as a packager and as a new operator use it: into a
 * DESTDIR (the staged tree's owners, modes and links, the unit file checked
 * by systemd-analyze, --uninstall restoring what was there), and for real
 * on this machine, following docs/install.md: install, set the listener
 * and domain, start the manager, send through the installed
 * /usr/sbin/sendmail as an ordinary user, see it in the recipient's
 * ~/Maildir; mailq and newaliases work by those names. The real install
 * restores the machine afterwards (uninstall, accounts removed).
 */
import assert from "node:assert/strict";
import { freePort, pathExists, ROOT, waitFor } from "./harness.ts";
import { PEERS, peerTest } from "./peers.ts";
import { runCommand } from "./run_cmd.ts";

const INSTALL = `${ROOT}scripts/install.sh`;
const SYSTEMD_ANALYZE = { bin: "/usr/bin/systemd-analyze", pkg: "systemd" };

function install(args: string[], env: Record<string, string> = {}) {
  return runCommand([INSTALL, ...args], {
    env: { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: "/root", ...env },
  });
}

function mode(path: string): string {
  return ((Deno.lstatSync(path).mode ?? 0) & 0o7777).toString(8);
}

Deno.test({
  name: "install.sh into DESTDIR: modes, links, config kept, unit verifies; --uninstall restores",
  ignore: Deno.uid() !== 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dest = await Deno.makeTempDir({ prefix: "skiff-destdir-" });
    try {
      // What was there before: another MTA's sendmail.
      await Deno.mkdir(`${dest}/usr/sbin`, { recursive: true });
      await Deno.writeTextFile(`${dest}/usr/sbin/sendmail`, "#!/bin/sh\necho other MTA\n");
      const r = await install(["--no-user"], { DESTDIR: dest });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(mode(`${dest}/var/spool/skiff`), "700");
      assert.equal(mode(`${dest}/var/spool/skiff-maildrop`), "1733");
      assert.equal(mode(`${dest}/etc/skiff/skiff.toml`), "644");
      assert.equal(mode(`${dest}/usr/local/sbin/skiff`), "755");
      for (const l of ["/usr/sbin/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases"]) {
        assert.equal(Deno.readLinkSync(`${dest}${l}`), "/usr/local/sbin/skiff", l);
      }
      assert.match(await Deno.readTextFile(`${dest}/usr/sbin/sendmail.skiff-saved`), /other MTA/);
      assert.match(await Deno.readTextFile(`${dest}/etc/cron.d/skiff`), /skiff .*flush/);
      // The launcher's code and module cache are readable by every uid (workers).
      const lib = `${dest}/usr/local/lib/skiff`;
      assert.equal((Deno.statSync(`${lib}/main.ts`).mode ?? 0) & 0o004, 0o004);
      assert.equal((Deno.statSync(`${lib}/deno-dir/npm`).mode ?? 0) & 0o005, 0o005);
      // An operator's edited config survives a second install.
      await Deno.writeTextFile(`${dest}/etc/skiff/skiff.toml`, "# edited\n");
      const again = await install(["--no-user"], { DESTDIR: dest });
      assert.equal(again.code, 0, again.stderr);
      assert.equal(await Deno.readTextFile(`${dest}/etc/skiff/skiff.toml`), "# edited\n");
      assert.match(again.stdout, /kept the existing/);
      const un = await install(["--uninstall"], { DESTDIR: dest });
      assert.equal(un.code, 0, un.stderr);
      assert.match(await Deno.readTextFile(`${dest}/usr/sbin/sendmail`), /other MTA/);
      assert.equal(pathExists(`${dest}/usr/bin/mailq`), false);
      assert.equal(pathExists(`${dest}/usr/local/sbin/skiff`), false);
      assert.equal(pathExists(`${dest}/etc/skiff/skiff.toml`), true); // config and spool are kept
    } finally {
      await Deno.remove(dest, { recursive: true });
    }
  },
});

peerTest("the unit file passes systemd-analyze verify", [SYSTEMD_ANALYZE], async () => {
  // verify checks ExecStart exists: point it at a stand-in inside a copy of the unit.
  const dir = await Deno.makeTempDir({ prefix: "skiff-unit-" });
  try {
    const unit = (await Deno.readTextFile(`${ROOT}conf/skiff.service`))
      .replaceAll("/usr/local/sbin/skiff", "/bin/true");
    await Deno.writeTextFile(`${dir}/skiff.service`, unit);
    const r = await runCommand([SYSTEMD_ANALYZE.bin, "verify", `${dir}/skiff.service`], {
      env: { PATH: "/usr/bin:/bin", SYSTEMD_LOG_LEVEL: "warning" },
    });
    const complaints = (r.stdout + r.stderr).split("\n")
      .filter((l) => l.includes("skiff.service") && !/Failed to (connect|create).*bus/.test(l));
    assert.deepEqual(complaints, [], r.stdout + r.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Creates a login user with a home directory; returns a remover. */
async function addUser(name: string): Promise<() => Promise<void>> {
  await runCommand(["/usr/sbin/userdel", "-r", name], {}); // a leftover from a killed run
  const r = await runCommand(["/usr/sbin/useradd", "-m", "-s", "/bin/sh", name], {});
  assert.equal(r.code, 0, r.stderr);
  return async () => {
    await runCommand(["/usr/sbin/userdel", "-r", "-f", name], {});
  };
}

peerTest(
  "a real install: mail sent through the installed sendmail by a user lands in ~/Maildir",
  [PEERS.setpriv],
  async () => {
    if (Deno.uid() !== 0) throw new Error("This test installs into system paths: run as root");
    const hadSkiffUser = (await runCommand(["/usr/bin/getent", "passwd", "skiff"], {})).code === 0;
    const hadConf = pathExists("/etc/skiff/skiff.toml");
    assert.equal(hadConf, false, "/etc/skiff/skiff.toml exists: not touching a real install");
    const cleanups: (() => Promise<void>)[] = [];
    let server: Deno.ChildProcess | null = null;
    try {
      const r = await install([]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      cleanups.push(async () => {
        await install(["--uninstall"]);
        for (const p of ["/etc/skiff", "/var/spool/skiff", "/var/spool/skiff-maildrop"]) {
          await Deno.remove(p, { recursive: true }).catch(() => {});
        }
        if (!hadSkiffUser) await runCommand(["/usr/sbin/userdel", "skiff"], {});
      });
      cleanups.push(await addUser("skinsta"), await addUser("skinstb"));
      // docs/install.md: set the hostname, the domains and the listeners.
      const port = await freePort();
      const conf = (await Deno.readTextFile("/etc/skiff/skiff.toml"))
        .replace('hostname = "mail.example.org"', 'hostname = "localhost"')
        .replace('address = "0.0.0.0:25"', `address = "127.0.0.1:${port}"`)
        .replace('aliases = "/etc/aliases"', 'aliases = "/etc/skiff/aliases"')
        .replace("[delivery]", '[delivery]\nnameserver = "127.0.0.1:1"');
      await Deno.writeTextFile("/etc/skiff/skiff.toml", conf);
      await Deno.writeTextFile("/etc/skiff/aliases", "postmaster: root\nteam: skinstb\n");
      const check = await runCommand(["/usr/local/sbin/skiff", "check-config"], {
        env: { SKIFF_CONFIG: "/etc/skiff/skiff.toml" },
      });
      assert.equal(check.code, 0, check.stderr);
      server = new Deno.Command("/usr/local/sbin/skiff", {
        args: ["--config", "/etc/skiff/skiff.toml", "serve"],
        stdin: "null",
        stdout: "null",
        stderr: "piped",
        clearEnv: true,
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
      }).spawn();
      const log: string[] = [];
      (async () => {
        for await (const c of server!.stderr.pipeThrough(new TextDecoderStream())) log.push(c);
      })();
      await waitFor(() => pathExists("/run/skiff/submit.sock") || null, 30_000, "the manager");
      const sent = await runCommand([
        "/usr/bin/setpriv",
        "--reuid=skinsta",
        "--regid=skinsta",
        "--init-groups",
        "--",
        "/usr/sbin/sendmail",
        "-i",
        "skinstb@localhost",
      ], {
        stdin: "Subject: installed\n\nhello from skinsta\n",
        cwd: "/tmp",
        env: { HOME: "/home/skinsta", PATH: "/usr/bin:/bin" },
      });
      assert.equal(sent.code, 0, sent.stderr + log.join(""));
      const files = await waitFor(
        () => {
          const f = listDir("/home/skinstb/Maildir/new");
          return f.length > 0 ? f : null;
        },
        30_000,
        `delivery to ~skinstb/Maildir (log: ${log.join("")})`,
      );
      const path = `/home/skinstb/Maildir/new/${files[0]}`;
      const text = await Deno.readTextFile(path);
      assert.match(text, /hello from skinsta/);
      assert.match(text, /^Return-Path: <skinsta@localhost>/);
      const owner = Deno.statSync(path).uid;
      const id = (await runCommand(["/usr/bin/id", "-u", "skinstb"], {})).stdout.trim();
      assert.equal(String(owner), id, "delivered as the recipient");
      const q = await runCommand(["/usr/bin/mailq"], {});
      assert.equal(q.code, 0, q.stderr);
      assert.match(q.stdout, /Mail queue is empty/);
      const na = await runCommand(["/usr/bin/newaliases"], {});
      assert.equal(na.code, 0, na.stderr);
      assert.match(na.stdout, /2 aliases/);
    } finally {
      if (server) {
        try {
          server.kill("SIGTERM");
        } catch { /* gone */ }
        await server.status;
      }
      for (const c of cleanups.reverse()) await c().catch(() => {});
    }
  },
);

function listDir(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return [];
  }
}
