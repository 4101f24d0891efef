/**
 * Node flags for the web process. A larger young generation (V8's semi-space, 16 MB by default on
 * 64-bit) means fewer scavenges for the short-lived objects of every agent call: at 2,000
 * heartbeats/s it cut the web process's CPU per heartbeat from 0.48 to 0.42 ms and its p95 from
 * 180 ms to 41–88 ms (two runs; the machine's other load varies) for ~25 MB more memory (docs/benchmarks.md). `npm start`, `npm run web` and the
 * heartbeat benchmark use them.
 */
export const WEB_NODE_FLAGS = ["--max-semi-space-size=32"];
