/**
 * A private Postfix instance for tests (the approach of scripts/bench_lib.ts,
 * not imported from it): its own main.cf/master.cf, queue, data directory and
 * log file under one temporary directory, started with `postfix -c`, smtpd on
 * a loopback port only. The system instance and /etc/postfix are never
 * touched; every wait is bounded and stop() makes sure the master is gone.
 */
import { freePort, sleep } from "./harness.ts";
import { runWithTimeout, waitListening } from "./run_cmd.ts";

export const POSTFIX = "/usr/sbin/postfix";

function readOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

/** The pids and all their descendants (from /proc). */
function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const stat = readOrNull(`/proc/${e.name}/stat`);
    if (!stat) continue;
    // The command name may contain spaces and parentheses: fields follow the last ")".
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(e.name)]);
  }
  const out: number[] = [];
  const todo = roots.filter((p) => readOrNull(`/proc/${p}/stat`) !== null);
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** The daemons a minimal instance needs (no chroot, no local delivery). */
const SERVICES = `pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

/** Options of a test instance. */
export interface PostfixOptions {
  /** Extra main.cf lines (relayhost, transport_maps, ...), appended last so they win. */
  mainCf?: string;
}

/** A running private Postfix instance. */
export class PostfixInstance {
  readonly dir: string;
  /** smtpd's port on 127.0.0.1. */
  readonly port: number;

  private constructor(dir: string, port: number) {
    this.dir = dir;
    this.port = port;
  }

  get confDir(): string {
    return `${this.dir}/conf`;
  }

  /** Writes the configuration, starts the instance and waits until smtpd answers. */
  static async start(opts: PostfixOptions = {}): Promise<PostfixInstance> {
    const dir = await Deno.makeTempDir({ prefix: "skiff-postfix-" });
    // Postfix's daemons (user postfix) must traverse every parent of the queue.
    await Deno.chmod(dir, 0o755);
    await Deno.mkdir(`${dir}/conf`);
    await Deno.mkdir(`${dir}/queue`, { mode: 0o755 });
    const port = await freePort();
    await Deno.writeTextFile(
      `${dir}/conf/main.cf`,
      `compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
syslog_name = postfix-skiff-test
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
alias_maps =
alias_database =
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtpd_tls_security_level = none
${opts.mainCf ?? ""}
`,
    );
    await Deno.writeTextFile(
      `${dir}/conf/master.cf`,
      `127.0.0.1:${port} inet n - n - 10 smtpd\n${SERVICES}`,
    );
    const pf = new PostfixInstance(dir, port);
    try {
      const res = await runWithTimeout(POSTFIX, ["-c", pf.confDir, "start"], 30_000);
      if (res.code !== 0) {
        const hint = /alternate_config_directories/.test(res.out + await pf.maillog())
          ? " (this user needs the directory in alternate_config_directories of " +
            "/etc/postfix/main.cf; the tests do not edit the system instance: run them as root)"
          : "";
        throw new Error(
          `postfix -c ${pf.confDir} start failed (${res.code})${hint}: ${res.out}\n${await pf
            .maillog()}`,
        );
      }
      await pf.#waitListening(20_000);
    } catch (err) {
      await pf.stop();
      throw err;
    }
    return pf;
  }

  #waitListening(ms: number): Promise<void> {
    return waitListening(this.port, ms, { what: "Postfix's smtpd" });
  }

  /** The instance's log so far. */
  async maillog(): Promise<string> {
    return await Deno.readTextFile(`${this.dir}/maillog`).catch(() => "");
  }

  /** The master's pid, or null when it is not running. */
  masterPid(): number | null {
    const text = readOrNull(`${this.dir}/queue/pid/master.pid`);
    const pid = text ? Number(text.trim()) : NaN;
    return Number.isInteger(pid) && pid > 0 && readOrNull(`/proc/${pid}/stat`) !== null
      ? pid
      : null;
  }

  /** `postfix stop`; if the master lingers, SIGKILL to it and its children. */
  async stop(): Promise<void> {
    const master = this.masterPid();
    const tree = master === null ? [] : processTree([master]);
    await runWithTimeout(POSTFIX, ["-c", this.confDir, "stop"], 20_000).catch(() => null);
    const deadline = Date.now() + 10_000;
    while (master !== null && readOrNull(`/proc/${master}/stat`) && Date.now() < deadline) {
      await sleep(50);
    }
    for (const pid of tree) {
      try {
        if (readOrNull(`/proc/${pid}/stat`)) Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }

  /** Removes the instance's directory (after stop). */
  async cleanup(): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
