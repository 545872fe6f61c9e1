/**
 * Pipe delivery: a command run once per recipient with the message on its
 * stdin, started from an argv list (never a shell, so no address can inject
 * anything), with a clean environment, as the configured uid and gid. The
 * exit status decides (sysexits.h, as Postfix's pipe(8)): 0 delivered, 75
 * EX_TEMPFAIL deferred, anything else failed with the command's stderr in
 * the DSN. Output is bounded and a command past its deadline is killed
 * (deferred).
 */
import { DeliveryError } from "./errors.ts";
import { CrlfToLf } from "./maildir.ts";

/** Options of deliverToPipe. */
export interface PipeDelivery {
  command: string[];
  /** Values for {recipient}, {sender}, {user}, {domain} in the arguments. */
  vars: { recipient: string; sender: string; user: string; domain: string };
  content: Uint8Array;
  uid?: number;
  gid?: number;
  timeoutMs: number;
  /** The account the command runs as (HOME, SHELL; cwd is its home when it exists). */
  account?: { home: string; shell: string };
}

/** PATH of every command: fixed, never inherited (Postfix's local(8) uses the same). */
export const PIPE_PATH = "/usr/bin:/bin";

/**
 * The whole environment of a command, as Postfix's local(8) and pipe(8)
 * set it: nothing inherited from skiff. RECIPIENT is the real recipient
 * address; LOCAL and DOMAIN are its parts; USER and LOGNAME the recipient's
 * user name; HOME and SHELL those of the account the command runs as.
 * skiff has no address extensions, so EXTENSION is never set.
 */
export function pipeEnv(opts: PipeDelivery): Record<string, string> {
  const v = opts.vars;
  const at = v.recipient.lastIndexOf("@");
  const env: Record<string, string> = {
    PATH: PIPE_PATH,
    SENDER: v.sender,
    RECIPIENT: v.recipient,
    LOCAL: at < 0 ? v.recipient : v.recipient.slice(0, at),
    DOMAIN: v.domain,
    USER: v.user,
    LOGNAME: v.user,
    HOME: opts.account?.home || "/",
    SHELL: opts.account?.shell || "/bin/sh",
  };
  return env;
}

/**
 * A command line is never handed an address that starts with "-" where a
 * whole argument is an address: a program would take it for an option
 * (Postfix refuses such addresses with allow_min_user = no for the same
 * reason). Throws a permanent DeliveryError naming the argument.
 */
export function guardArgs(command: string[], vars: Record<string, string>): string[] {
  return command.slice(1).map((a) => {
    const out = expandArg(a, vars);
    if (out.startsWith("-") && /^\{(recipient|sender|user|domain)\}/.test(a)) {
      throw new DeliveryError(
        `Address ${JSON.stringify(out.slice(0, 100))} starts with "-" and is not passed to ${
          command[0]
        }`,
        { permanent: true, dsn: "5.1.3" },
      );
    }
    return out;
  });
}

/** Most stderr kept for the DSN. */
const MAX_STDERR = 1000;

/** Expands {name} placeholders in one argument (each stays one argument). */
export function expandArg(arg: string, vars: Record<string, string>): string {
  return arg.replace(/\{(recipient|sender|user|domain)\}/g, (_, k: string) => vars[k] ?? "");
}

/** Runs the command; resolves with a text for the log, or throws DeliveryError. */
export async function deliverToPipe(opts: PipeDelivery): Promise<string> {
  const prog = opts.command[0];
  const vars = opts.vars as unknown as Record<string, string>;
  const args = guardArgs(opts.command, vars);
  const home = opts.account?.home ?? "";
  const cwd = home.startsWith("/") && (await Deno.stat(home).catch(() => null))?.isDirectory
    ? home
    : "/";
  const ids = opts.uid !== undefined && opts.gid !== undefined
    ? { uid: opts.uid, gid: opts.gid }
    : {};
  const spawn = (dir: string) =>
    new Deno.Command(prog, {
      args,
      cwd: dir,
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
      clearEnv: true,
      env: pipeEnv(opts),
      ...ids,
    }).spawn();
  let child: Deno.ChildProcess;
  try {
    try {
      child = spawn(cwd);
    } catch (err) {
      if (cwd === "/") throw err;
      child = spawn("/"); // a home the account cannot enter: "/" as Postfix does
    }
  } catch (err) {
    throw new DeliveryError(`Cannot run ${prog}: ${(err as Error).message}`, { dsn: "4.3.0" });
  }
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, opts.timeoutMs);
  try {
    const conv = new CrlfToLf();
    const data = Uint8Array.from([...conv.push(opts.content), ...conv.flush()]);
    const writer = child.stdin.getWriter();
    // A command may exit without reading everything: its status decides.
    await writer.write(data).catch(() => {});
    await writer.close().catch(() => {});
    const errText = readBounded(child.stderr);
    const status = await child.status;
    const stderr = (await errText).trim();
    if (killed) {
      throw new DeliveryError(`Command ${prog} timed out and was killed`, { dsn: "4.3.0" });
    }
    if (status.signal) {
      throw new DeliveryError(`Command ${prog} died on ${status.signal}: ${stderr}`, {
        dsn: "4.3.0",
      });
    }
    if (status.code === 0) return `Delivered to command ${prog}`;
    const text = `Command ${prog} exited with status ${status.code}${stderr ? `: ${stderr}` : ""}`;
    // sysexits.h EX_TEMPFAIL: try again later.
    if (status.code === 75) throw new DeliveryError(text, { dsn: "4.3.0" });
    throw new DeliveryError(text, { permanent: true, dsn: "5.3.0" });
  } finally {
    clearTimeout(timer);
  }
}

async function readBounded(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  const dec = new TextDecoder();
  for await (const chunk of stream) {
    if (text.length < MAX_STDERR) text += dec.decode(chunk, { stream: true });
  }
  // deno-lint-ignore no-control-regex
  return text.slice(0, MAX_STDERR).replace(/[\x00-\x1f\x7f]+/g, " ");
}
