/**
 * The import rules of docs/architecture.md, checked over the real module
 * graph (`deno info --json main.ts`): no import cycle between modules, and
 * no import from a folder of lib/ to one in a higher (or the same, but
 * different) layer. Prints each offence with the importing and imported
 * file and exits 1 when there is any, so CI fails on a new cycle or a wrong
 * direction. Written here because the graph comes from Deno itself and the
 * rules are ten lines; no maintained npm tool reads Deno's module graph.
 *
 * Usage: deno run --allow-read --allow-run scripts/check_imports.ts
 */

/** Layers from the bottom up: a folder may import only folders of a lower layer (and itself). */
export const LAYERS: readonly (readonly string[])[] = [
  ["sys", "metrics", "version.ts"],
  ["config"],
  ["mail"],
  ["wire"],
  ["log"],
  ["spool", "dns", "auth"],
  ["net"],
  ["milter", "mailauth"],
  ["route"],
  ["smtp"],
  ["tlspolicy"],
  ["deliver", "listen", "maildrop"],
  ["worker", "privsep"],
  ["queue"],
  ["control"],
  ["http"],
  ["cli"],
];

/** The layer of a lib/ folder (or top-level lib file); undefined when unknown. */
export function layerOf(folder: string): number | undefined {
  const i = LAYERS.findIndex((l) => l.includes(folder));
  return i < 0 ? undefined : i;
}

/** `lib/<folder>/...` → folder; main.ts and files outside lib/ → null. */
function folderOf(rel: string): string | null {
  const m = /^lib\/([^/]+)/.exec(rel);
  return m ? m[1] : null;
}

interface Graph {
  [module: string]: string[];
}

async function moduleGraph(root: URL): Promise<Graph> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("main.ts", root).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("deno info failed");
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: {
      specifier: string;
      dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
    }[];
  };
  const prefix = root.href;
  const graph: Graph = {};
  for (const m of info.modules) {
    if (!m.specifier.startsWith(prefix)) continue;
    const deps = new Set<string>();
    for (const d of m.dependencies ?? []) {
      for (const s of [d.code?.specifier, d.type?.specifier]) {
        if (s?.startsWith(prefix)) deps.add(s.slice(prefix.length));
      }
    }
    graph[m.specifier.slice(prefix.length)] = [...deps];
  }
  return graph;
}

/** Strongly connected components with more than one module (Tarjan). */
export function cycles(graph: Graph): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph[v] ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph[v] ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of Object.keys(graph).sort()) if (!idx.has(v)) visit(v);
  return found;
}

/** Imports that break the layer rule, as "from -> to (why)". */
export function wrongDirections(graph: Graph): string[] {
  const bad: string[] = [];
  for (const [from, deps] of Object.entries(graph)) {
    const ff = folderOf(from);
    if (ff === null) continue;
    const lf = layerOf(ff);
    for (const to of deps) {
      const tf = folderOf(to);
      if (tf === null || tf === ff) continue;
      const lt = layerOf(tf);
      if (lf === undefined || lt === undefined) {
        bad.push(`${from} -> ${to} (lib/${lf === undefined ? ff : tf} has no layer)`);
      } else if (lt >= lf) {
        bad.push(`${from} -> ${to} (${ff} may not import ${tf}: same or higher layer)`);
      }
    }
  }
  return bad.sort();
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url);
  const graph = await moduleGraph(root);
  const loops = cycles(graph);
  const wrong = wrongDirections(graph);
  for (const c of loops) console.log(`cycle: ${c.join(" <-> ")}`);
  for (const w of wrong) console.log(`direction: ${w}`);
  const n = Object.keys(graph).length;
  console.log(`${n} modules, ${loops.length} cycle(s), ${wrong.length} wrong-direction import(s)`);
  Deno.exit(loops.length + wrong.length === 0 ? 0 : 1);
}
