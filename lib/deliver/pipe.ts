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
}

/** Most stderr kept for the DSN. */
const MAX_STDERR = 1000;

/** Expands {name} placeholders in one argument (each stays one argument). */
export function expandArg(arg: string, vars: Record<string, string>): string {
  return arg.replace(/\{(recipient|sender|user|domain)\}/g, (_, k: string) => vars[k] ?? "");
}

/** Runs the command; resolves with a text for the log, or throws DeliveryError. */
export async function deliverToPipe(opts: PipeDelivery): Promise<string> {
  const [prog, ...rest] = opts.command;
  const vars = opts.vars as unknown as Record<string, string>;
  const ids = opts.uid !== undefined && opts.gid !== undefined
    ? { uid: opts.uid, gid: opts.gid }
    : {};
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(prog, {
      args: rest.map((a) => expandArg(a, vars)),
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
      clearEnv: true,
      env: {
        PATH: "/usr/bin:/bin",
        SENDER: opts.vars.sender,
        RECIPIENT: opts.vars.recipient,
        USER: opts.vars.user,
        DOMAIN: opts.vars.domain,
      },
      ...ids,
    }).spawn();
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
