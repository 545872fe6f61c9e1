/**
 * Runs the scripted SMTP dialogues in tests/dialogues/*.smtp against a real
 * `skiff serve` listening on loopback (chasquid's .cmy / OpenSMTPD's
 * smtpscript in spirit). The syntax is described at the top of basic.smtp.
 */
import assert from "node:assert/strict";
import { RawClient, SkiffServer } from "./harness.ts";

interface Step {
  op: "send" | "raw" | "expect" | "contains" | "close";
  text: string;
  line: number;
}

interface Dialogue {
  name: string;
  steps: Step[];
}

/** Expands {X*N} and the escapes \r \n \t \xHH of a ">>" line. */
function expandRaw(text: string): string {
  const repeated = text.replace(
    /\{(.+?)\*(\d+)\}/gs,
    (_m, x: string, n: string) => x.repeat(Number(n)),
  );
  return repeated.replace(/\\(r|n|t|x[0-9a-fA-F]{2}|\\)/g, (_m, e: string) => {
    if (e === "r") return "\r";
    if (e === "n") return "\n";
    if (e === "t") return "\t";
    if (e === "\\") return "\\";
    return String.fromCharCode(parseInt(e.slice(1), 16));
  });
}

function parseDialogues(text: string): Dialogue[] {
  const out: Dialogue[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = i + 1;
    if (raw.startsWith("--- ")) return out.push({ name: raw.slice(4).trim(), steps: [] });
    if (raw.startsWith("#") || raw.trim() === "") return;
    const d = out.at(-1);
    if (!d) throw new Error(`Line ${line}: step before the first "--- name"`);
    if (raw.startsWith(">> ")) d.steps.push({ op: "raw", text: expandRaw(raw.slice(3)), line });
    else if (raw === ">" || raw.startsWith("> ")) {
      d.steps.push({ op: "send", text: raw.slice(2), line });
    } else if (raw.startsWith("<* ")) d.steps.push({ op: "contains", text: raw.slice(3), line });
    else if (raw === "<close") d.steps.push({ op: "close", text: "", line });
    else if (raw.startsWith("< ")) d.steps.push({ op: "expect", text: raw.slice(2), line });
    else throw new Error(`Line ${line}: cannot parse ${JSON.stringify(raw)}`);
  });
  return out;
}

async function runDialogue(port: number, d: Dialogue, file: string): Promise<void> {
  const c = await RawClient.connect(port);
  let last: string[] | null = null;
  try {
    for (const s of d.steps) {
      const where = `${file}:${s.line} (${d.name})`;
      if (s.op === "send") await c.line(s.text);
      else if (s.op === "raw") await c.send(s.text);
      else if (s.op === "contains") {
        // Checks the reply read by the next "<" step, so read it now and keep it.
        last = last ?? await c.reply();
        assert.ok(last, `${where}: connection closed, expected a reply containing ${s.text}`);
        assert.ok(
          last.some((l) => l.includes(s.text)),
          `${where}: ${JSON.stringify(last)} lacks ${s.text}`,
        );
      } else if (s.op === "expect") {
        const r = last ?? await c.reply();
        last = null;
        assert.ok(r, `${where}: connection closed, expected ${s.text}`);
        const final = r[r.length - 1];
        assert.ok(
          final.startsWith(s.text),
          `${where}: got ${JSON.stringify(r)}, expected ${s.text}`,
        );
      } else {
        assert.ok(await c.closed(), `${where}: server did not close the connection`);
      }
    }
  } finally {
    c.close();
  }
}

Deno.test({
  name: "scripted SMTP dialogues",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const server = await SkiffServer.start({
      top: `relay_networks = []`,
      toml: `[limits]
message_size = 4096
recipients = 3
errors = 8
command_timeout = 2
unknown_commands = 50
`,
    });
    try {
      const dir = new URL("./dialogues/", import.meta.url);
      const files = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".smtp"))
        .sort();
      assert.ok(files.length >= 2, "dialogue files found");
      let count = 0;
      for (const file of files) {
        const text = await Deno.readTextFile(new URL(file, dir));
        for (const d of parseDialogues(text)) {
          count++;
          await t.step(`${file}: ${d.name}`, () => runDialogue(server.port, d, file));
        }
      }
      assert.ok(count >= 15, `ran ${count} dialogues`);
    } finally {
      await server.stop();
      await server.cleanup();
    }
  },
});
