// bench/affinity's database: one process shared by every worker, as a site's database is. A load is a
// 4-byte id sent on a unix socket; the answer is the same 4 bytes once the load is served. The database
// serves at most `capacity` loads at a time, each taking AFFINITY_MISS_MS; the others wait in one FIFO
// queue (capacity 0: no limit, every load is a plain wait — the model before the database process).
// That is what makes a load cost capacity: a real database has a fixed number of disks, cores and
// connections, and every worker's misses compete for them.
//
// Forked by run.ts with an IPC channel: argv[2] = socket path. It sends { type: "ready" } once
// listening; { type: "capacity", capacity } changes the limit (the queue is served at the new limit
// from then on) and is answered with { type: "stats" }; { type: "stats" } answers the counters; on
// disconnect it exits.
import { rmSync } from "node:fs";
import net from "node:net";
import { loadFrame, readLoadIds } from "./load-ids.ts";

export type ToDb = { type: "capacity"; capacity: number } | { type: "stats" };
export interface DbStats {
  type: "stats";
  /** Loads served since start. */
  served: number;
  /** Sum of the time loads waited in the queue before being served, ms. */
  queuedMs: number;
  /** Sum of busy slot time, ms (served × miss time, plus loads in service). */
  busyMs: number;
  /** Loads waiting now. */
  waiting: number;
  capacity: number;
}

const path = process.argv[2];
if (path === undefined) throw new Error("usage: db.ts SOCKET_PATH");
const missMs = Number(process.env.AFFINITY_MISS_MS ?? "5");
let capacity = 0;
let active = 0;
let served = 0;
let queuedMs = 0;
let busyMs = 0;

interface Load {
  socket: net.Socket;
  id: number;
  at: number;
}
/** FIFO of waiting loads: an array with a moving head (no shift() per load). */
let queue: Load[] = [];
let head = 0;

function pump(): void {
  while (head < queue.length && (capacity === 0 || active < capacity)) {
    const load = queue[head++]!;
    active++;
    const started = performance.now();
    queuedMs += started - load.at;
    setTimeout(() => {
      active--;
      served++;
      busyMs += performance.now() - started;
      if (!load.socket.destroyed) load.socket.write(loadFrame(load.id));
      pump();
    }, missMs);
  }
  if (head > 4096 && head * 2 > queue.length) {
    queue = queue.slice(head);
    head = 0;
  }
}

rmSync(path, { force: true });
const server = net.createServer((socket) => {
  socket.setNoDelay(true);
  socket.on("error", () => {});
  readLoadIds(socket, (id) => queue.push({ socket, id, at: performance.now() }), pump);
});
server.listen(path, () => process.send?.({ type: "ready" }));

const stats = (): DbStats => ({
  type: "stats",
  served,
  queuedMs,
  busyMs,
  waiting: queue.length - head,
  capacity,
});
process.on("message", (m: ToDb) => {
  if (m.type === "capacity") {
    capacity = Math.max(0, Math.floor(m.capacity));
    pump();
  }
  process.send?.(stats());
});
process.on("disconnect", () => {
  server.close();
  rmSync(path, { force: true });
  process.exit(0);
});
