// bench/affinity's service module (loaded by every `serve()` worker): a site whose request classes
// (header x-tenant) each have a working set of objects. Each worker keeps a bounded LRU cache of
// objects; a miss is a database load (counted): a request to the shared database process (db.ts,
// AFFINITY_DB_SOCKET), which serves a bounded number of loads at a time, or without that socket a local
// wait of AFFINITY_MISS_MS; then AFFINITY_MISS_CPU_US of CPU (decoding the object, default 0). Every
// call then burns AFFINITY_HIT_US of CPU (rendering from the cached object).
//
// SIGUSR2 makes the worker write { worker, pid, requests, loads, cache } to
// AFFINITY_DUMP_DIR/w<slot>-<pid>.json (written to a temporary name, then renamed), so the driver can
// read every worker's counters and cache contents without routing a call to each.
import { renameSync, writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { defineService } from "../../src/server/index.ts";
import { loadFrame, readLoadIds } from "./load-ids.ts";

const capacity = Number(process.env.AFFINITY_CACHE_OBJECTS ?? "2500");
const missMs = Number(process.env.AFFINITY_MISS_MS ?? "5");
const hitUs = Number(process.env.AFFINITY_HIT_US ?? "200");
const missCpuUs = Number(process.env.AFFINITY_MISS_CPU_US ?? "0");
const dumpDir = process.env.AFFINITY_DUMP_DIR;
const dbSocket = process.env.AFFINITY_DB_SOCKET;
const servedBy = `w${process.env.ROSTER_WORKER_ID ?? "?"}-${process.pid}`;

/** Map order is LRU order: first = least recently used. */
const cache = new Map<string, true>();
let requests = 0;
let loads = 0;

function busy(us: number): void {
  const end = process.hrtime.bigint() + BigInt(Math.round(us * 1000));
  while (process.hrtime.bigint() < end) {
    // spin: the CPU part of a call
  }
}

/** The connection to the database process, opened at the first load; loads in flight by id. */
let db: net.Socket | undefined;
const inFlight = new Map<number, (err?: Error) => void>();
let nextId = 0;

function connectDb(path: string): net.Socket {
  const socket = net.connect(path);
  socket.setNoDelay(true);
  readLoadIds(socket, (id) => {
    const done = inFlight.get(id);
    inFlight.delete(id);
    done?.();
  });
  const fail = (err: Error) => {
    db = undefined;
    for (const done of inFlight.values()) done(err);
    inFlight.clear();
  };
  socket.on("error", fail);
  socket.on("close", () => fail(new Error("database connection closed")));
  return socket;
}

/** One database load: through the database process when there is one, else a local wait. */
function load(): Promise<void> {
  if (dbSocket === undefined) return new Promise((r) => setTimeout(r, missMs));
  db ??= connectDb(dbSocket);
  const id = nextId;
  nextId = (nextId + 1) >>> 0;
  const socket = db;
  return new Promise((resolve, reject) => {
    inFlight.set(id, (err) => (err ? reject(err) : resolve()));
    socket.write(loadFrame(id));
  });
}

if (dumpDir !== undefined) {
  process.on("SIGUSR2", () => {
    const file = join(dumpDir, `${servedBy}.json`);
    const body = { worker: servedBy, pid: process.pid, requests, loads, cache: [...cache.keys()] };
    writeFileSync(`${file}.tmp`, JSON.stringify(body));
    renameSync(`${file}.tmp`, file);
  });
}

interface GetCall {
  request: { object: number };
  metadata: { get(key: string): unknown[] };
}

export default defineService({
  proto: "./site.proto",
  service: "roster.bench.affinity.Site",
  idempotent: ["Get"],
  handlers: {
    async Get(call: GetCall) {
      requests++;
      const tenant = String(call.metadata.get("x-tenant")[0] ?? "");
      const key = `${tenant}/${call.request.object}`;
      const loaded = !cache.has(key);
      if (loaded) {
        loads++;
        await load();
        if (missCpuUs > 0) busy(missCpuUs);
      }
      cache.delete(key);
      cache.set(key, true);
      if (cache.size > capacity) {
        const oldest = cache.keys().next();
        if (oldest.done !== true) cache.delete(oldest.value);
      }
      busy(hitUs);
      return { served_by: servedBy, loaded };
    },
  },
});
