/**
 * The sendmail modes that belong to the delivery engine, mapped onto the
 * router's own commands: `sendmail -bi` / `-I` (and a `newaliases` link,
 * dispatched in main.ts) compile the aliases file; `sendmail -bv ADDR...`
 * prints where each address would be routed and why (`skiff route`).
 */
import type { Config } from "../config/types.ts";
import { newaliasesCommand as routerNewaliases, routeCommand } from "./route.ts";
import { EX_USAGE } from "../sys/exit_codes.ts";

/** `sendmail -bi`. */
export function newaliasesCommand(cfg: Config, _argv: string[]): Promise<number> {
  return routerNewaliases(cfg);
}

/** `sendmail -bv ADDR...`: verify and print routing. */
export function verifyCommand(cfg: Config, addresses: string[]): Promise<number> {
  if (addresses.length === 0) {
    console.error("sendmail: -bv needs at least one address");
    return Promise.resolve(EX_USAGE);
  }
  return routeCommand(cfg, addresses);
}
