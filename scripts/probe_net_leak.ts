/**
 * Does the runtime's node:net server give back what a closed connection
 * used? Serves a one-line greeting on 127.0.0.1:PORT for at most SECONDS
 * and prints RSS and the V8 heap after a forced GC every 3 s. Drive it with
 * `smtp-source -A -s 20 -m 2000 -l 2048 -N -f a@localhost -t u@example.net
 * 127.0.0.1:PORT` a few times: a plateau is fine, steady growth is a leak.
 *
 *   ./scripts/deno run -A --v8-flags=--expose-gc scripts/probe_net_leak.ts [PORT] [SECONDS]
 */
import * as net from "node:net";

const port = Number(Deno.args[0] ?? 2603);
const seconds = Math.min(Number(Deno.args[1] ?? 60), 600);
const server = net.createServer((s) => {
  s.on("data", (d) => String(d).includes("QUIT") ? s.end("221 bye\r\n") : s.write("250 ok\r\n"));
  s.on("error", () => {});
  s.write("220 probe\r\n");
});
server.listen(port, "127.0.0.1");
const timer = setInterval(() => {
  (globalThis as { gc?: () => void }).gc?.();
  const u = Deno.memoryUsage();
  console.log(`rss=${(u.rss / 1e6).toFixed(0)}MB heapUsed=${(u.heapUsed / 1e6).toFixed(1)}MB`);
}, 3000);
setTimeout(() => {
  clearInterval(timer);
  server.close();
  Deno.exit(0);
}, seconds * 1000);
