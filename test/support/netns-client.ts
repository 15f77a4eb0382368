// Runs inside a test host's network namespace: makes CALLS calls (each sleeping SLEEP_US in the handler),
// LANES at a time, to all TARGETs at once; prints "STARTED" after the first reply, then one JSON line
// {"TARGET": {"served": {host: calls}, "failed": [messages]}}.
//
//   node --import tsx test/support/netns-client.ts CALLS LANES SLEEP_US TARGET [TARGET…]
import { createDemoClient } from "./demo-client.ts";

const [callsText, lanesText, sleepText, ...targets] = process.argv.slice(2);
const calls = Number(callsText);
const lanes = Number(lanesText);
const sleepUs = Number(sleepText);
const out: Record<string, { served: Record<string, number>; failed: string[] }> = {};
let started = false;
await Promise.all(
  targets.map(async (target) => {
    const client = createDemoClient(target);
    const served: Record<string, number> = {};
    const failed: string[] = [];
    let left = calls;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        // Bounded: CALLS calls in all.
        while (left > 0) {
          left--;
          try {
            const host = (await client.echo("Echo", 0, 10_000, sleepUs)).served_by.split("/")[0]!;
            served[host] = (served[host] ?? 0) + 1;
            if (!started) {
              started = true;
              process.stdout.write("STARTED\n");
            }
          } catch (err) {
            failed.push((err as Error).message);
          }
        }
      }),
    );
    client.close();
    out[target] = { served, failed };
  }),
);
process.stdout.write(`${JSON.stringify(out)}\n`);
