/**
 * sendmail's command line, parsed the way Postfix's and sendmail's getopt
 * does: clustered flags (`-ti`), values attached or separate (`-fADDR`,
 * `-f ADDR`), options before or among recipients, `--` ends options.
 * Legacy options that change nothing here are accepted (some with a
 * warning); unknown ones are a UsageError naming the option (EX_USAGE).
 */

/** What sendmail was asked to do. */
export type SendmailMode =
  | "deliver"
  | "smtp"
  | "queue-list"
  | "newaliases"
  | "verify"
  | "flush";

/** The parsed command line. */
export interface SendmailArgs {
  mode: SendmailMode;
  /** -t: recipients from To/Cc/Bcc (or the Resent- ones), added to the command line's. */
  extract: boolean;
  /** False with -i/-oi: a lone "." does not end the message. */
  dotEnds: boolean;
  /** -f/-r: envelope sender; null when not given. */
  sender: string | null;
  /** -F: full name for the From: header. */
  fullName: string | null;
  verbose: boolean;
  /** -N: DSN NOTIFY (RFC 3461), e.g. ["SUCCESS","FAILURE"] or ["NEVER"]. */
  notify: string[] | null;
  /** -R: DSN RET ("FULL" | "HDRS"). */
  ret: string | null;
  /** -V: DSN ENVID. */
  envid: string | null;
  /** -B: BODY ("7BIT" | "8BITMIME"). */
  body: string | null;
  /** -qRsite: flush only mail for this domain. */
  flushDomain: string | null;
  recipients: string[];
  warnings: string[];
}

/** A usage error naming what was wrong. */
export class UsageError extends Error {}

/** Flags that take a value (the rest of the cluster, or the next argument). */
const WITH_VALUE = new Set([
  "B",
  "C",
  "F",
  "L",
  "N",
  "O",
  "R",
  "V",
  "X",
  "b",
  "e",
  "f",
  "h",
  "o",
  "p",
  "r",
]);

/** -o options that only matter to sendmail's own delivery modes: accepted silently. */
const SILENT_O = new Set(["em", "ee", "ep", "eq", "ew", "m", "db", "di", "dq", "db", "dd"]);

/** Parses sendmail's flags. */
export function parseSendmailArgs(argv: string[]): SendmailArgs {
  const a: SendmailArgs = {
    mode: "deliver",
    extract: false,
    dotEnds: true,
    sender: null,
    fullName: null,
    verbose: false,
    notify: null,
    ret: null,
    envid: null,
    body: null,
    flushDomain: null,
    recipients: [],
    warnings: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      a.recipients.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      a.recipients.push(arg);
      continue;
    }
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j];
      if (flag === "q") {
        // -q, -q30m (interval: ignored), -qRsite / -qSsite (one site).
        apply(a, "q", arg.slice(j + 1));
        break;
      }
      if (WITH_VALUE.has(flag)) {
        let value = arg.slice(j + 1);
        if (value === "") {
          if (i + 1 >= argv.length) throw new UsageError(`Option -${flag} needs a value`);
          value = argv[++i];
        }
        apply(a, flag, value);
        break;
      }
      apply(a, flag, "");
    }
  }
  return a;
}

function apply(a: SendmailArgs, flag: string, value: string): void {
  const warn = (what: string) => a.warnings.push(`Option ${what} ignored`);
  switch (flag) {
    case "t":
      a.extract = true;
      return;
    case "i":
      a.dotEnds = false;
      return;
    case "v":
      a.verbose = true;
      return;
    case "f":
    case "r":
      a.sender = value === "<>" ? "" : value.replace(/^<(.*)>$/, "$1");
      return;
    case "F":
      a.fullName = value;
      return;
    case "b":
      return mode(a, value);
    case "I":
      a.mode = "newaliases";
      return;
    case "q":
      a.mode = "flush";
      if (/^[RS]/.test(value) && value.length > 1) a.flushDomain = value.slice(1).toLowerCase();
      else if (value !== "") warn(`-q${value} (interval; skiff flushes once)`);
      return;
    case "N":
      return notify(a, value);
    case "R": {
      const v = value.toUpperCase();
      if (v !== "FULL" && v !== "HDRS") {
        throw new UsageError(`Option -R needs "full" or "hdrs", not ${JSON.stringify(value)}`);
      }
      a.ret = v;
      return;
    }
    case "V":
      // RFC 3461 §4.4: ENVID is printable ASCII, at most 100 characters.
      if (!/^[\x21-\x7e]{1,100}$/.test(value)) {
        throw new UsageError("Option -V needs an envelope id of 1-100 printable characters");
      }
      a.envid = value;
      return;
    case "B": {
      const v = value.toUpperCase();
      if (v !== "7BIT" && v !== "8BITMIME") {
        throw new UsageError(`Option -B needs "7bit" or "8bitmime", not ${JSON.stringify(value)}`);
      }
      a.body = v;
      return;
    }
    case "o":
      if (value === "i") a.dotEnds = false;
      else if (!SILENT_O.has(value)) warn(`-o${value}`);
      return;
    case "C":
      throw new UsageError(
        "Option -C (another config) is not supported; use skiff --config FILE sendmail ...",
      );
    case "U":
    case "m":
      return; // initial submission / "me too": what skiff always does
    case "n":
    case "G":
    case "x":
    case "c":
      warn(`-${flag}`);
      return;
    case "e":
    case "h":
    case "L":
    case "O":
    case "X":
    case "p":
      warn(`-${flag} ${value}`);
      return;
    default:
      throw new UsageError(`Unknown option -${flag}`);
  }
}

function mode(a: SendmailArgs, value: string): void {
  switch (value) {
    case "m":
      a.mode = "deliver";
      return;
    case "s":
      a.mode = "smtp";
      return;
    case "p":
      a.mode = "queue-list";
      return;
    case "i":
      a.mode = "newaliases";
      return;
    case "v":
      a.mode = "verify";
      return;
    case "d":
    case "D":
      throw new UsageError(`Option -b${value} (daemon mode) is not supported; run "skiff serve"`);
    default:
      throw new UsageError(`Unknown option -b${value}`);
  }
}

function notify(a: SendmailArgs, value: string): void {
  const parts = value.toUpperCase().split(",").map((s) => s.trim()).filter((s) => s !== "");
  const ok = parts.length > 0 &&
    (parts.length === 1 && parts[0] === "NEVER" ||
      parts.every((p) => p === "SUCCESS" || p === "FAILURE" || p === "DELAY"));
  if (!ok) {
    throw new UsageError(
      `Option -N needs "never" or a list of success, failure, delay; not ${JSON.stringify(value)}`,
    );
  }
  a.notify = [...new Set(parts)];
}
