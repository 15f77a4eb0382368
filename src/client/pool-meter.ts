import type { experimental } from "@grpc/grpc-js";
import * as grpc from "@grpc/grpc-js";

/**
 * How many connections one pool member (a grpc-js channel) holds: its READY subchannels, as grpc-js
 * itself sees them. A server's MAX_CONCURRENT_STREAMS caps one connection, and a channel running
 * round_robin (or any of Roster's policies) over N backends holds N connections, so it carries N
 * times the server's limit before calls queue; the pool sizes itself from this count.
 *
 * grpc-js tells a channel's subchannels only to its load-balancing policy, so the pool wraps the
 * member's policy in `roster_pool_meter`: `{ "roster_pool_meter": { "meter": ID, "childPolicy":
 * [ …the configured list… ] } }`. The meter runs the child policy unchanged (its pickers go to the
 * channel as they are: nothing is added to a call's path) and watches the connectivity of every
 * subchannel the child creates, reporting the number of distinct READY addresses to the callback
 * registered under ID. Without a service config a channel runs pick_first, so that is the child then.
 */
export const POOL_METER = "roster_pool_meter";

type Report = (readyConnections: number) => void;
const meters = new Map<number, Report>();
let nextMeter = 0;

/** A meter id whose reports go to `report` until `dispose()`. */
export function registerMeter(report: Report): { id: number; dispose(): void } {
  ensureRegistered();
  const id = ++nextMeter;
  meters.set(id, report);
  return { id, dispose: () => meters.delete(id) };
}

/**
 * The channel options of a member metered by `id`: the service config's `loadBalancingConfig`
 * (or `loadBalancingPolicy`, or grpc-js's default pick_first) becomes the meter's child.
 */
export function meteredChannelOptions(options: grpc.ChannelOptions, id: number): grpc.ChannelOptions {
  const raw = options["grpc.service_config"];
  const sc: Record<string, unknown> = typeof raw === "string" && raw !== "" ? JSON.parse(raw) : {};
  let child = sc.loadBalancingConfig as object[] | undefined;
  if (child === undefined || child.length === 0) {
    const policy = sc.loadBalancingPolicy;
    child = [{ [typeof policy === "string" ? policy.toLowerCase() : "pick_first"]: {} }];
  }
  const { loadBalancingPolicy: _, ...rest } = sc;
  return {
    ...options,
    "grpc.service_config": JSON.stringify({
      ...rest,
      loadBalancingConfig: [{ [POOL_METER]: { meter: id, childPolicy: child } }],
    }),
  };
}

let registered = false;

function ensureRegistered(): void {
  if (registered) return;
  registered = true;
  const x = grpc.experimental;
  const READY = grpc.connectivityState.READY;

  class MeterConfig implements experimental.TypedLoadBalancingConfig {
    constructor(
      readonly meter: number,
      readonly child: experimental.TypedLoadBalancingConfig,
      readonly raw: object,
    ) {}
    getLoadBalancerName(): string {
      return POOL_METER;
    }
    toJsonObject(): object {
      return { [POOL_METER]: this.raw };
    }
    static createFromJson(obj: { meter?: unknown; childPolicy?: unknown }): MeterConfig {
      if (typeof obj?.meter !== "number") throw new Error(`${POOL_METER}: meter must be a number`);
      const list = Array.isArray(obj.childPolicy) ? obj.childPolicy : [];
      const child = x.selectLbConfigFromList(list, true);
      if (child === null) throw new Error(`${POOL_METER}: no usable childPolicy`);
      return new MeterConfig(obj.meter, child, obj);
    }
  }

  class MeterBalancer implements experimental.LoadBalancer {
    readonly #child: experimental.ChildLoadBalancerHandler;
    /** Per address: READY or not, as the last state change of any of its subchannels said. */
    readonly #ready = new Map<string, boolean>();
    #meter = 0;
    #reported = -1;

    constructor(helper: experimental.ChannelControlHelper) {
      this.#child = new x.ChildLoadBalancerHandler(
        x.createChildChannelControlHelper(helper, {
          createSubchannel: (address, args) => {
            const sc = helper.createSubchannel(address, args);
            const key = x.subchannelAddressToString(address);
            sc.addConnectivityStateListener((_s, _prev, next) => this.#set(key, next === READY));
            this.#set(key, sc.getConnectivityState() === READY);
            return sc;
          },
        }),
      );
    }

    #set(key: string, ready: boolean): void {
      if (this.#ready.get(key) === ready) return;
      this.#ready.set(key, ready);
      let n = 0;
      for (const r of this.#ready.values()) if (r) n++;
      if (n !== this.#reported) {
        this.#reported = n;
        meters.get(this.#meter)?.(n);
      }
    }

    updateAddressList(
      endpoints: experimental.StatusOr<experimental.Endpoint[]>,
      config: experimental.TypedLoadBalancingConfig,
      options: grpc.ChannelOptions,
      note: string,
    ): boolean {
      if (!(config instanceof MeterConfig)) return false;
      this.#meter = config.meter;
      return this.#child.updateAddressList(endpoints, config.child, options, note);
    }
    exitIdle(): void {
      this.#child.exitIdle();
    }
    resetBackoff(): void {
      this.#child.resetBackoff();
    }
    destroy(): void {
      this.#child.destroy();
    }
    getTypeName(): string {
      return POOL_METER;
    }
  }

  x.registerLoadBalancerType(
    POOL_METER,
    MeterBalancer,
    MeterConfig as unknown as Parameters<typeof x.registerLoadBalancerType>[2],
  );
}
