/**
 * `skiff route ADDR...` (also `sendmail -bv`): prints where each address
 * would be delivered and why, resolving MX records as delivery would; and
 * `skiff newaliases` (also `sendmail -bi`): compiles the aliases file.
 */
import type { Config } from "../config/types.ts";
import { writeFileDurably } from "../spool/durable.ts";
import { resolveMx } from "../dns/mx.ts";
import { compiledPath, loadAliases, parseAliases, serializeAliases } from "../route/aliases.ts";
import { describeDestination, route } from "../route/router.ts";
import { TlsPolicy } from "../tlspolicy/policy.ts";
import { safeReadTextSync } from "../sys/safe_open.ts";

/** Prints the route of each address; returns the exit code (64 without addresses). */
export async function routeCommand(cfg: Config, args: string[]): Promise<number> {
  if (args.length === 0) {
    console.error("usage: skiff route ADDRESS...");
    return 64;
  }
  const { table } = await loadAliases(cfg.delivery.aliases);
  // :include: files of the aliases, with the manager's rules (lib/queue/dispatch.ts readSmall).
  const readFile = (p: string) =>
    safeReadTextSync(p, { limit: 1024 * 1024, owners: [0, Deno.uid() ?? 0], noOtherWrite: true });
  const ctx = { aliases: table, readFile, root: Deno.uid() === 0 };
  for (const address of args) {
    const r = route(cfg, ctx, address);
    if (r.type === "fail") {
      console.log(`${address}: fails with ${r.dsn} ${r.text} (${r.why})`);
    } else if (r.type === "expand") {
      const list = r.targets.map((t) =>
        t.kind === "address" ? t.address : t.kind === "pipe" ? `|${t.command.join(" ")}` : t.path
      );
      console.log(`${address}: expands to ${list.join(", ")} (${r.why})`);
    } else {
      console.log(`${address}: ${describeDestination(r.destination, r.domain)} (${r.why})`);
      if (r.destination.kind === "smtp" || r.destination.kind === "lmtp") {
        console.log(`  tls: ${r.destination.tls} (route tls)`);
      }
      if (r.destination.kind === "mx") {
        try {
          const resolver = {
            nameserver: cfg.delivery.nameserver,
            timeoutMs: cfg.delivery.dnsTimeout * 1000,
          };
          const hosts = await resolveMx(r.domain, resolver);
          for (const h of hosts) console.log(`  mx ${h.preference} ${h.host} ${h.address}`);
          // The TLS policy per MX host and its source (route, MTA-STS, DANE), as delivery decides it.
          const policy = new TlsPolicy({
            config: { ...cfg.delivery.tlsPolicy, tlsRpt: "off" },
            resolver,
            spoolDir: cfg.spoolDir,
            hostname: cfg.hostname,
          });
          const names = [...new Set(hosts.map((h) => h.host))];
          for (const line of await policy.explain(r.domain, r.destination.tls, names)) {
            console.log(line);
          }
        } catch (err) {
          console.log(`  ${(err as Error).message}`);
        }
      }
    }
  }
  return 0;
}

/** Compiles delivery.aliases to FILE.json; returns the number of aliases. Throws on errors. */
export async function newaliases(cfg: Config): Promise<number> {
  const src = cfg.delivery.aliases;
  if (src === "") throw new Error("No aliases file configured (delivery.aliases)");
  const table = parseAliases(await Deno.readTextFile(src), src);
  await writeFileDurably(compiledPath(src), new TextEncoder().encode(serializeAliases(table)));
  return table.size;
}

/** `skiff newaliases` as a command: prints a summary; exit 0, or 78 for a bad file. */
export async function newaliasesCommand(cfg: Config): Promise<number> {
  try {
    const n = await newaliases(cfg);
    console.log(`skiff newaliases: ${cfg.delivery.aliases}: ${n} aliases`);
    return 0;
  } catch (err) {
    console.error(`skiff newaliases: ${(err as Error).message}`);
    return 78;
  }
}
