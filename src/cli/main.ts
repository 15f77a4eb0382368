import { Command, CommanderError, InvalidArgumentError } from "commander";
import { ConfigError } from "../core/errors.ts";
import { poisonFreedSlabs } from "../http2/out-buffer.ts";
import { registerBenchCommand } from "./bench.ts";
import { runDemo } from "./demo.ts";
import { runLb } from "./lb.ts";
import { runRegister } from "./register.ts";
import { runServe } from "./serve.ts";

/**
 * `roster`: argv parsing and wiring only. Errors a user can fix (flags, config) print one line and exit
 * with status 2; nothing prints a stack trace for them.
 */
const program = new Command("roster")
  .description("Per-call gRPC load balancing: multi-process serving and an L7 balancer for gRPC")
  .version("0.1.0")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

const collect = (value: string, previous: string[] = []) => [...previous, value];
const port = (value: string) => {
  if (!/^\S+$/.test(value)) throw new InvalidArgumentError("expected HOST:PORT or unix:PATH");
  return value;
};

program
  .command("lb")
  .description("run a gRPC L7 load balancer in front of backends written in any language")
  .option("-c, --config <file>", "YAML configuration file (see docs/configuration.md); flags override it")
  .option(
    "-l, --listen <address>",
    "where clients connect: HOST:PORT or unix:PATH (default 127.0.0.1:50051)",
    port,
  )
  .option("-b, --backend <address>", "a backend HOST:PORT or unix:PATH; repeat for each backend", collect)
  .option(
    "--discovery <url>",
    "backends from etcd or DNS instead, followed live: etcd://HOST:PORT/PREFIX (members registered by roster serve --etcd or roster register) or dns://NAME:PORT[?refreshMs=N] (A/AAAA records, re-resolved every 30 s)",
  )
  .option(
    "--settings <url>",
    "live settings: etcd://HOST:PORT/KEY holding a YAML/JSON document of the config file's schema (policy, routes, clusters…), applied on every change; a bad one is refused and the last good kept",
  )
  .option(
    "-p, --policy <name>",
    "load-balancing policy: least_request (default), round_robin, pick_first, peak_ewma, weighted_round_robin (weights from ORCA load reports), resume (résumé affinity; its classifier is set in --config); ring_hash needs --config for its hashKey",
  )
  .option("-a, --admin <address>", "admin HTTP address serving /metrics, /status, /healthz")
  .option("--log-level <level>", "trace, debug, info (default), warn, error, silent")
  .option("--expose-backend", "add an x-roster-backend response header naming the backend (for load tests)")
  .addHelpText(
    "after",
    `
Examples:
  roster lb --listen 127.0.0.1:50051 --backend 127.0.0.1:50061 --backend 127.0.0.1:50062
  roster lb --config roster.yaml --admin 127.0.0.1:9901
  roster lb --discovery etcd://127.0.0.1:2379/services/echo

Signals: SIGHUP re-reads the config file (also re-read when it changes); SIGTERM/SIGINT drain and exit.`,
  )
  .action(async (options) => {
    await runLb(options);
  });

const count = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a whole number >= 1`);
  return n;
};

program
  .command("serve")
  .description("serve a gRPC service module on N worker processes behind one port, balancing every call")
  .argument(
    "<module>",
    "service module (.ts or .js) exporting defineService(...) (see examples/echo-service.ts)",
  )
  .option("-w, --workers <n>", "worker processes (default: number of cores)", count("--workers"))
  .option("-l, --listen <address>", "HOST:PORT or unix:PATH (default 127.0.0.1:50051)", port)
  .option("-a, --admin <address>", "admin HTTP address serving /metrics, /status, /healthz")
  .option("-p, --policy <name>", "load-balancing policy over workers (default least_request)")
  .option(
    "--drain-grace <ms>",
    "time open calls get to finish on SIGTERM or rolling restart",
    count("--drain-grace"),
  )
  .option(
    "--classify <how>",
    "request class for --policy resume: header:NAME, authority, method, or regex:FROM:PATTERN (group `class`)",
  )
  .option("--skills-dir <dir>", "where workers persist their skills (worker-N.json), reloaded on restart")
  .option(
    "--history <n>",
    "worker skills: requests a skill remembers, and the publish period",
    count("--history"),
  )
  .option("--log-level <level>", "trace, debug, info (default), warn, error, silent")
  .option("--etcd <hosts>", "register the front address in etcd: HOST:PORT[,HOST:PORT…] (needs --prefix)")
  .option("--prefix <prefix>", "etcd key prefix to register under (balancers use etcd://HOST:PORT/PREFIX)")
  .option("--advertise <address>", "the address registered in etcd (default: --listen)")
  .option("--weight <w>", "weight registered in etcd (default 1)")
  .option("--label <key=value>", "a label registered in etcd; repeat for each", collect)
  .option("--lease-ttl <seconds>", "etcd lease TTL: how long a dead server stays registered (default 10)")
  .option("--app-version <text>", "version text registered in etcd (shown as the label version)")
  .option(
    "--deregister-delay <ms>",
    "on drain, time between leaving etcd and closing the listener, for balancers to follow (default 1000)",
  )
  .addHelpText(
    "after",
    `
Signals: SIGTERM/SIGINT drain and exit 0 (with --etcd: deregister first); SIGHUP restarts workers one at a time (no failed call);
SIGTTIN adds a worker; SIGTTOU removes one gracefully (its open calls finish; never below 1).`,
  )
  .action(async (module: string, options) => {
    await runServe(module, options);
  });

program
  .command("register")
  .description(
    "keep a backend registered in etcd while this runs (a sidecar for backends that are not roster serve)",
  )
  .requiredOption("--etcd <hosts>", "etcd HOST:PORT[,HOST:PORT…]")
  .requiredOption("--prefix <prefix>", "key prefix (balancers use etcd://HOST:PORT/PREFIX)")
  .requiredOption("--address <address>", "the backend's HOST:PORT or unix:PATH, as balancers reach it")
  .option("--weight <w>", "relative weight (default 1)")
  .option("--label <key=value>", "a label; repeat for each", collect)
  .option("--lease-ttl <seconds>", "lease TTL: how long the key outlives this process if killed (default 10)")
  .option("--app-version <text>", "version text (shown as the label version)")
  .option("--log-level <level>", "trace, debug, info (default), warn, error, silent")
  .addHelpText(
    "after",
    `
Example:
  roster register --etcd 127.0.0.1:2379 --prefix services/echo --address 10.0.0.7:50061 --label zone=a

Prints "REGISTERED <key>" once the key is written. SIGTERM/SIGINT deregister (the key goes at once) and
exit 0; if this process is killed, the key goes when its lease expires.`,
  )
  .action(async (options) => {
    await runRegister(options);
  });

program
  .command("demo")
  .description("see per-call balancing work: 4 workers driven from ONE client connection, two ways")
  .option("--workers <n>", "worker processes", count("--workers"), 4)
  .option("--calls <n>", "calls per run", count("--calls"), 2000)
  .option("--concurrency <n>", "calls in flight", count("--concurrency"), 32)
  .option("--work-us <n>", "CPU time each call burns in its handler, µs", count("--work-us"), 2000)
  .action(async (options) => {
    await runDemo({
      workers: options.workers,
      calls: options.calls,
      concurrency: options.concurrency,
      workUs: options.workUs,
    });
    process.exit(0);
  });

registerBenchCommand(program);

// Debugging (set by the integration tests): output slabs given back to the pool are filled with 0xEE,
// so a view used after its slab was reused shows as corrupt bytes (src/http2/out-buffer.ts).
if (process.env.ROSTER_DEBUG_SLABS === "1") poisonFreedSlabs(true);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode;
  } else if (err instanceof ConfigError) {
    process.stderr.write(`roster: ${err.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`roster: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
