// Test hosts in Linux network namespaces (root only): one namespace per host, each with a veth into a
// bridge that lives in a namespace of its own, all on 10.213.0.0/24. Traffic between them never touches
// the machine's own interfaces. `dispose()` deletes the namespaces (stop their processes first).
import { execFileSync, spawnSync } from "node:child_process";

export interface TestNetwork {
  /** Host name → its IPv4 address. */
  readonly address: ReadonlyMap<string, string>;
  /** The command prefix that runs a program on `host`. */
  exec(host: string): string[];
  dispose(): void;
}

/** Why these tests cannot run here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (ip netns); CI runs as root";
  const probe = `roster-probe-${process.pid}`;
  const add = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (add.error !== undefined) return `ip is missing (${add.error.message}): install iproute2`;
  if (add.status !== 0) return `ip netns add failed: ${add.stderr.trim()}`;
  spawnSync("ip", ["netns", "del", probe]);
  return undefined;
}

function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

export function createTestNetwork(hosts: readonly string[]): TestNetwork {
  const tag = `r${process.pid}`;
  const sw = `${tag}-sw`;
  const made: string[] = [];
  const address = new Map<string, string>();
  const nsOf = (host: string) => `${tag}-${host}`;
  const dispose = () => {
    for (const ns of made.splice(0).reverse()) spawnSync("ip", ["netns", "del", ns]);
  };
  try {
    ip("netns", "add", sw);
    made.push(sw);
    ip("-n", sw, "link", "add", "br0", "type", "bridge");
    ip("-n", sw, "link", "set", "br0", "up");
    for (const [i, host] of hosts.entries()) {
      const ns = nsOf(host);
      ip("netns", "add", ns);
      made.push(ns);
      const inside = `v${i}`;
      const outside = `p${i}`;
      // The veth is made inside the host's namespace, then its peer moved to the switch.
      ip("-n", ns, "link", "add", inside, "type", "veth", "peer", "name", outside);
      ip("-n", ns, "link", "set", outside, "netns", sw);
      ip("-n", sw, "link", "set", outside, "master", "br0");
      ip("-n", sw, "link", "set", outside, "up");
      const addr = `10.213.0.${10 + i}`;
      ip("-n", ns, "addr", "add", `${addr}/24`, "dev", inside);
      ip("-n", ns, "link", "set", inside, "up");
      ip("-n", ns, "link", "set", "lo", "up");
      address.set(host, addr);
    }
  } catch (err) {
    dispose();
    throw err;
  }
  return { address, exec: (host) => ["ip", "netns", "exec", nsOf(host)], dispose };
}
