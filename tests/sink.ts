/**
 * Postfix's smtp-sink as a real receiving server for tests: every message
 * it accepts is dumped to its own file in a directory the test can read.
 */
import { freePort } from "./harness.ts";
import { waitListening } from "./run_cmd.ts";

/** A running smtp-sink. */
export class Sink {
  readonly port: number;
  readonly dumpDir: string;
  #child: Deno.ChildProcess;

  private constructor(port: number, dumpDir: string, child: Deno.ChildProcess) {
    this.port = port;
    this.dumpDir = dumpDir;
    this.#child = child;
  }

  /** Starts smtp-sink on a free loopback port (as nobody: it refuses to run as root). */
  static async start(
    opts: { lmtp?: boolean; port?: number; noDsn?: boolean } = {},
  ): Promise<Sink> {
    const port = opts.port ?? await freePort();
    const dumpDir = await Deno.makeTempDir({ prefix: "skiff-sink-" });
    await Deno.chmod(dumpDir, 0o777);
    const args = [
      "-u",
      "nobody",
      "-d",
      `${dumpDir}/msg`,
      ...(opts.lmtp ? ["-L"] : []),
      ...(opts.noDsn ? ["-N"] : []), // do not announce DSN (RFC 3461)
      `127.0.0.1:${port}`,
      "100",
    ];
    const child = new Deno.Command("/usr/sbin/smtp-sink", {
      args,
      stdout: "null",
      stderr: "null",
      stdin: "null",
    })
      .spawn();
    // Wait until it accepts connections.
    try {
      await waitListening(port, 5_000, { what: "smtp-sink" });
    } catch (err) {
      child.kill("SIGKILL");
      throw new Error(`smtp-sink did not start: ${err}`);
    }
    return new Sink(port, dumpDir, child);
  }

  /** Contents of every dumped message. */
  async messages(): Promise<string[]> {
    const out: string[] = [];
    for await (const e of Deno.readDir(this.dumpDir)) {
      if (e.isFile) out.push(await Deno.readTextFile(`${this.dumpDir}/${e.name}`));
    }
    return out;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await Deno.remove(this.dumpDir, { recursive: true }).catch(() => {});
  }
}
