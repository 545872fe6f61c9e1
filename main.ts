/**
 * skiff's one entrypoint: picks a sub-command from argv (or from the name it
 * was started by: `sendmail`, `mailq`) and hands off. Every sub-command
 * returns an exit code; config errors exit 78 (EX_CONFIG).
 */
import process from "node:process";
import { EX_CONFIG, EX_OSERR, EX_SOFTWARE, EX_USAGE } from "./lib/sys/exit_codes.ts";
import type { Config } from "./lib/config/types.ts";
import { ensureSigusr1Blocked } from "./lib/sys/sigusr1.ts";
import { VERSION } from "./lib/version.ts";

// Every command's code is imported when that command runs: a worker child
// (one per local delivery) then loads only the worker's modules, not the
// server, DKIM and metrics libraries: measured 0.49 s and 82 MB against
// 0.19 s and 45 MB per start here. The imports are string literals, so
// `deno compile` still bundles them.

const HELP = `skiff ${VERSION} — a small, durable mail transfer agent

Usage: skiff [--config FILE] COMMAND [ARGS]

Commands:
  serve          run the queue manager and its listeners
  sendmail ...   submit a message read from stdin (sendmail-compatible flags)
  mailq          list the queue
  flush          try every queued message now (tells a running manager, or runs one pass)
  queue ...      list [--json] | show ID | hold|release|delete|retry (IDs | --domain D | --all)
  status         queue counts, oldest message, manager uptime and connections (--json)
  reload         tell the running manager to re-read its config (as SIGHUP does)
  check-config   validate the config and print the effective settings
  route ADDR...  show where each address would be delivered, and why
  newaliases     compile the aliases file (delivery.aliases)
  passwd USER    print a credentials line for USER (password on stdin)
  dkim keygen --domain D --selector S [--type rsa|ed25519] [--out FILE]
                 make a DKIM key (mode 0600) and print the DNS record to publish
  version        print the version
  help           this text

The config comes from --config FILE, else $SKIFF_CONFIG, else the embedded default
(SMTP on 127.0.0.1:2525, spool ./var/spool, Maildirs ./var/mail/<user>/); run as
sendmail, mailq or newaliases, /etc/skiff/skiff.toml comes before the embedded default.
Invoked as "sendmail", "mailq" or "newaliases" (a link to the binary), skiff acts as that command.
`;

/** Splits off a leading --config/-c option. */
function takeConfigPath(argv: string[]): { path: string | undefined; rest: string[] } {
  const rest = [...argv];
  let path = Deno.env.get("SKIFF_CONFIG") || undefined;
  while (rest.length > 0) {
    if (rest[0] === "--config" || rest[0] === "-c") {
      if (rest.length < 2) throw new ConfigErrorUsage("Option --config needs a file name");
      path = rest[1];
      rest.splice(0, 2);
    } else if (rest[0].startsWith("--config=")) {
      path = rest[0].slice("--config=".length);
      rest.splice(0, 1);
    } else break;
  }
  return { path, rest };
}

class ConfigErrorUsage extends Error {}

async function withConfig(path: string | undefined, fn: (c: Config) => Promise<number>) {
  const { ConfigError, loadConfig } = await import("./lib/config/load.ts");
  let cfg: Config;
  try {
    cfg = await loadConfig(path);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`skiff: ${err.message}`);
      return EX_CONFIG;
    }
    throw err;
  }
  return await fn(cfg);
}

/** Where scripts/install.sh puts the config of an installed system. */
const SYSTEM_CONFIG = "/etc/skiff/skiff.toml";

function existsFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** Names a link to the binary may have; each acts as that command. */
const LINK_NAMES = new Set(["sendmail", "mailq", "newaliases"]);

/** Commands that may run long enough for a SIGUSR1 to open an inspector. */
const GUARDED = new Set(["serve", "worker", "privhelper", "flush", "sendmail", "queue"]);

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    // --config is read before the name the program was started by is put in
    // front: `mailq --config FILE` must list FILE's spool.
    parsed = takeConfigPath(argv);
  } catch (err) {
    console.error(`skiff: ${(err as Error).message}`);
    return EX_USAGE;
  }
  const invokedAs = process.argv0.split("/").pop() ?? "";
  if (LINK_NAMES.has(invokedAs)) {
    parsed.rest = [invokedAs, ...parsed.rest];
    // Programs run /usr/sbin/sendmail with no idea of skiff's config: an installed system's
    // config is the default for the link names, as /etc/postfix is for Postfix's sendmail.
    if (parsed.path === undefined && existsFile(SYSTEM_CONFIG)) parsed.path = SYSTEM_CONFIG;
  }
  const [command = "help", ...args] = parsed.rest;
  if (GUARDED.has(command)) {
    // Before Deno's 500 ms grace period ends: see lib/sys/sigusr1.ts.
    const why = ensureSigusr1Blocked();
    if (why && command === "serve" && Deno.build.os === "linux") {
      console.error(`skiff: refusing to serve: ${why} (a SIGUSR1 would open a V8 inspector)`);
      return EX_OSERR;
    }
    if (why) console.error(`skiff: warning: ${why}`);
  }
  switch (command) {
    case "serve": {
      const { serve } = await import("./lib/cli/serve.ts");
      return await withConfig(parsed.path, serve);
    }
    case "sendmail": {
      const { sendmail } = await import("./lib/cli/sendmail.ts");
      return await withConfig(parsed.path, (c) => sendmail(c, args));
    }
    case "mailq": {
      const { mailq } = await import("./lib/cli/mailq.ts");
      return await withConfig(parsed.path, mailq);
    }
    case "flush": {
      const { flush } = await import("./lib/cli/flush.ts");
      return await withConfig(parsed.path, flush);
    }
    case "queue": {
      const { queueCommand } = await import("./lib/cli/queue.ts");
      return await withConfig(parsed.path, (c) => queueCommand(c, args));
    }
    case "status": {
      const { status } = await import("./lib/cli/status.ts");
      return await withConfig(parsed.path, (c) => status(c, args));
    }
    case "reload": {
      const { reload } = await import("./lib/cli/reload.ts");
      return await withConfig(parsed.path, reload);
    }
    case "route": {
      const { routeCommand } = await import("./lib/cli/route.ts");
      return await withConfig(parsed.path, (c) => routeCommand(c, args));
    }
    case "newaliases": {
      const { newaliasesCommand } = await import("./lib/cli/sendmail_modes.ts");
      return await withConfig(parsed.path, (c) => newaliasesCommand(c, args));
    }
    case "check-config": {
      const { describeConfig } = await import("./lib/config/load.ts");
      const { NO_USER_WARNING } = await import("./lib/privsep/plan.ts");
      return await withConfig(parsed.path, (c) => {
        if (!c.user) console.error(`skiff: warning: ${NO_USER_WARNING}`);
        console.log(describeConfig(c));
        return Promise.resolve(0);
      });
    }
    case "passwd": {
      const { passwd } = await import("./lib/auth/passwd.ts");
      return await passwd(args);
    }
    case "dkim": {
      const { dkimCommand } = await import("./lib/mailauth/keygen.ts");
      return await withConfig(parsed.path, (c) => dkimCommand(c, args));
    }
    case "worker": {
      const { workerMain } = await import("./lib/worker/child.ts");
      return await workerMain();
    }
    case "privhelper": {
      // Hidden: started by `skiff serve` only (lib/privsep/helper.ts).
      const { privhelperMain } = await import("./lib/privsep/helper.ts");
      return await withConfig(parsed.path, privhelperMain);
    }
    case "version":
    case "--version":
      console.log(`skiff ${VERSION}`);
      return 0;
    case "help":
    case "--help":
    case "-h":
      console.log(HELP);
      return 0;
    default:
      console.error(`skiff: unknown command ${JSON.stringify(command)}; see "skiff help"`);
      return EX_USAGE;
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (err) {
    console.error(`skiff: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    code = EX_SOFTWARE;
  }
  Deno.exit(code);
}
