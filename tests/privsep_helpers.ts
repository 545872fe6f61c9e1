/**
 * Helpers for the privilege-separation tests: test accounts (prefix skpv,
 * created and removed here), /proc inspection of a running manager (which
 * process holds a TCP listener, every thread's ids, descendants, descriptor
 * flags) and a python program that records what a child inherited.
 */

const created: string[] = [];

/** The passwd entry of `name`, creating a system account without a home when missing. */
export async function testAccount(name: string): Promise<{ uid: number; gid: number }> {
  const find = async () => {
    const line = (await Deno.readTextFile("/etc/passwd")).split("\n").find((l) =>
      l.startsWith(`${name}:`)
    );
    return line ? { uid: Number(line.split(":")[2]), gid: Number(line.split(":")[3]) } : null;
  };
  const have = await find();
  if (have) return have;
  const r = await new Deno.Command("/usr/sbin/useradd", {
    args: [
      "--system",
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      name,
    ],
  }).output();
  if (!r.success) throw new Error(`useradd ${name} failed: ${new TextDecoder().decode(r.stderr)}`);
  created.push(name);
  return (await find())!;
}

globalThis.addEventListener("unload", () => {
  for (const name of created) new Deno.Command("/usr/sbin/userdel", { args: [name] }).outputSync();
});

/** Uid, Gid and Groups lines of a /proc status file. */
export function idsOf(statusText: string): { uid: number[]; gid: number[]; groups: number[] } {
  const f = (k: string) => {
    const m = new RegExp(`^${k}:\\s*(.*)$`, "m").exec(statusText);
    return m && m[1].trim() ? m[1].trim().split(/\s+/).map(Number) : [];
  };
  return { uid: f("Uid"), gid: f("Gid"), groups: f("Groups") };
}

/** The pid whose descriptors include the listening TCP socket on 127.0.0.1:port. */
export async function pidListeningOn(port: number): Promise<number> {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inode = (await Deno.readTextFile("/proc/net/tcp")).split("\n")
    .map((l) => l.trim().split(/\s+/))
    .find((f) => f[1] === `0100007F:${hex}` && f[3] === "0A")?.[9];
  if (!inode) throw new Error(`Nothing listens on 127.0.0.1:${port}`);
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    try {
      for (const fd of Deno.readDirSync(`/proc/${p.name}/fd`)) {
        if (Deno.readLinkSync(`/proc/${p.name}/fd/${fd.name}`) === `socket:[${inode}]`) {
          return Number(p.name);
        }
      }
    } catch { /* gone or not ours */ }
  }
  throw new Error(`No process holds socket inode ${inode}`);
}

/** Every thread's ids of a process. */
export function threadIds(
  pid: number,
): { tid: string; uid: number[]; gid: number[]; groups: number[] }[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((t) => ({
    tid: t.name,
    ...idsOf(Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/status`)),
  }));
}

/** Descendants of pid (children, grandchildren, ...), with their uid and command line. */
export function descendants(pid: number): { pid: number; uid: number; cmd: string }[] {
  const parent = new Map<number, number>();
  for (const p of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(p.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${p.name}/stat`);
      parent.set(Number(p.name), Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]));
    } catch { /* gone */ }
  }
  const out: { pid: number; uid: number; cmd: string }[] = [];
  const walk = (of: number) => {
    for (const [child, pp] of parent) {
      if (pp !== of) continue;
      try {
        const uid = idsOf(Deno.readTextFileSync(`/proc/${child}/status`)).uid[0];
        const cmd = Deno.readTextFileSync(`/proc/${child}/cmdline`).replaceAll("\0", " ");
        out.push({ pid: child, uid, cmd });
      } catch { /* gone */ }
      walk(child);
    }
  };
  walk(pid);
  return out;
}

/** Socket descriptors of pid that are not close-on-exec (fdinfo flags lack O_CLOEXEC). */
export function inheritableSockets(pid: number): string[] {
  const bad: string[] = [];
  for (const fd of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target = "";
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${fd.name}`);
    } catch {
      continue;
    }
    if (!target.startsWith("socket:")) continue;
    const flags = /^flags:\s*([0-7]+)/m.exec(
      Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd.name}`),
    );
    if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) bad.push(`${fd.name} -> ${target}`);
  }
  return bad;
}

/**
 * A program that records what it inherited: its ids, open descriptors, the
 * names of its environment variables and of its parent's (the worker's:
 * issue 8 finding 4 read a password there), its cwd, as JSON into the file named
 * by argv[1] (or on stdout without one), after reading all of stdin.
 */
export const RECORDER = `#!/usr/bin/python3
import json, os, sys
data = sys.stdin.buffer.read()
fds = []
for fd in range(0, 4096):
    try:
        os.fstat(fd)
        fds.append(fd)
    except OSError:
        pass
try:
    with open("/proc/%d/environ" % os.getppid(), "rb") as f:
        parent_env = sorted(k.split(b"=")[0].decode() for k in f.read().split(b"\\0") if k)
except OSError as e:
    parent_env = "unreadable: " + str(e)
rec = {"parent_env": parent_env, "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "fds": fds,
       "env": sorted(os.environ.keys()), "cwd": os.getcwd(), "stdin": len(data)}
print("recorder ran", file=sys.stderr)
if len(sys.argv) > 1:
    with open(sys.argv[1] + ".tmp", "w") as f:
        json.dump(rec, f)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
else:
    print(json.dumps(rec))
`;
