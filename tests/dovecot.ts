/**
 * A private Dovecot instance for tests: the master (`dovecot -F -c CONF`)
 * with only the LMTP service, listening on a loopback port and a unix
 * socket, a static userdb (every user is `nobody`, or this user when not
 * root) and Maildirs under one temporary directory. Its own base_dir, so the
 * system instance is never touched. `lmtpCommand` is Dovecot's `lmtp`
 * binary run standalone: it speaks LMTP on stdin/stdout (a program
 * destination) and asks the running master's auth service for the user.
 * stdin/stdout of the master are /dev/null (PEERS.md: otherwise a pipeline
 * never closes); every wait is bounded.
 */
import { freePort, maildirFiles } from "./harness.ts";
import { waitListening } from "./run_cmd.ts";

export const DOVECOT = "/usr/sbin/dovecot";
export const DOVECOT_LMTP = "/usr/lib/dovecot/lmtp";

/** The running instance. */
export class Dovecot {
  readonly dir: string;
  readonly port: number;
  #child: Deno.ChildProcess;

  private constructor(dir: string, port: number, child: Deno.ChildProcess) {
    this.dir = dir;
    this.port = port;
    this.#child = child;
  }

  get conf(): string {
    return `${this.dir}/dovecot.conf`;
  }

  /** The LMTP unix socket. */
  get socket(): string {
    return `${this.dir}/lmtp.sock`;
  }

  /** argv of a standalone LMTP server on stdin/stdout (a `program` route). */
  get lmtpCommand(): string[] {
    return [DOVECOT_LMTP, "-c", this.conf];
  }

  /**
   * Starts the master and waits until LMTP answers on the port. With
   * `users`, only those exist (a passwd-file userdb: anyone else gets 550
   * 5.1.1); otherwise every name is a user.
   */
  static async start(opts: { users?: string[] } = {}): Promise<Dovecot> {
    const dir = await Deno.makeTempDir({ prefix: "skiff-dovecot-" });
    // The mail user (nobody) creates its Maildirs under mail/ and must reach it.
    await Deno.chmod(dir, 0o755);
    await Deno.mkdir(`${dir}/mail`, { mode: 0o777 });
    await Deno.chmod(`${dir}/mail`, 0o777);
    const port = await freePort();
    const root = Deno.uid() === 0;
    const me = root ? "" : new TextDecoder().decode(
      (await new Deno.Command("/usr/bin/id", { args: ["-un"], stdout: "piped" }).output()).stdout,
    ).trim();
    const ids = root ? "uid=nobody gid=nogroup" : `uid=${Deno.uid()} gid=${Deno.gid()}`;
    let userdb = `userdb {\n  driver = static\n  args = ${ids} home=${dir}/mail/%n\n}`;
    if (opts.users) {
      await Deno.writeTextFile(`${dir}/users`, opts.users.map((u) => `${u}::::::\n`).join(""));
      userdb = `userdb {\n  driver = passwd-file\n  args = username_format=%n ${dir}/users\n` +
        `  default_fields = ${ids} home=${dir}/mail/%n\n}`;
    }
    await Deno.writeTextFile(
      `${dir}/dovecot.conf`,
      `base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
instance_name = skiff-test-${port}
protocols = lmtp
ssl = no
listen = 127.0.0.1
${root ? "" : `default_internal_user = ${me}\ndefault_login_user = ${me}\n`}\
mail_location = maildir:${dir}/mail/%n
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = ${port}
  }
  unix_listener lmtp {
    path = ${dir}/lmtp.sock
    mode = 0666
  }
}
${userdb}
passdb {
  driver = static
  args = nopassword=y
}
`,
    );
    const child = new Deno.Command(DOVECOT, {
      args: ["-F", "-c", `${dir}/dovecot.conf`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const dc = new Dovecot(dir, port, child);
    try {
      await waitListening(port, 20_000, { what: "dovecot" });
    } catch (err) {
      await dc.stop();
      throw new Error(`dovecot did not start: ${err}\n${await dc.log()}`);
    }
    return dc;
  }

  /** Dovecot's log so far. */
  async log(): Promise<string> {
    return await Deno.readTextFile(`${this.dir}/dovecot.log`).catch(() => "");
  }

  /** Files Dovecot wrote to a user's INBOX (Maildir new/). */
  messages(user: string): Promise<string[]> {
    return maildirFiles(`${this.dir}/mail/${user}`);
  }

  /** SIGTERM to the master (it ends its children), SIGKILL after 10 s; removes the directory. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await this.#child.status;
    clearTimeout(timer);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
