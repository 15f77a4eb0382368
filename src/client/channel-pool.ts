import * as grpc from "@grpc/grpc-js";
import { PoolSizer, type PoolSizingConfig } from "./pool-sizing.ts";

/**
 * Several grpc-js channels to one target, so calls past a server's MAX_CONCURRENT_STREAMS go out on
 * another connection instead of waiting inside the first. Each member is a grpc.Client with its own
 * channel and `grpc.use_local_subchannel_pool` (without it grpc-js shares subchannels, and so
 * connections, between channels with the same target and options). A call goes to the member with
 * the fewest calls; `PoolSizer` decides when to open one more or close one.
 *
 * A member's count covers a call from its creation to its status (queued behind the limiter too), so
 * a member taken out of the pool ("draining") is closed only once its last call has ended.
 */
export interface PoolMember {
  readonly client: grpc.Client;
  /** Calls created on this member and not yet ended. */
  inFlight: number;
  draining: boolean;
  readonly id: number;
}

export interface ChannelPoolOptions {
  target: string;
  credentials: grpc.ChannelCredentials;
  channelOptions: grpc.ChannelOptions;
  /** Interceptors every call runs through after the pool's own counting (the limiter goes here). */
  interceptors: grpc.Interceptor[];
  sizing: PoolSizingConfig;
}

export interface PoolStats {
  /** Members taking calls. */
  size: number;
  /** Members ever opened (the high-water mark of growth plus replacements). */
  opened: number;
  inFlight: number;
  perChannel: number[];
}

export class ChannelPool {
  readonly #options: ChannelPoolOptions;
  readonly #sizer: PoolSizer;
  readonly #members: PoolMember[] = [];
  readonly #draining = new Set<PoolMember>();
  readonly #timer: NodeJS.Timeout;
  #opened = 0;
  #closed = false;

  constructor(options: ChannelPoolOptions) {
    this.#options = options;
    this.#sizer = new PoolSizer(options.sizing);
    for (let i = 0; i < options.sizing.min; i++) this.#open();
    // Demand that stops entirely makes no call to notice it: a timer looks now and then.
    this.#timer = setInterval(() => this.#resize(Date.now()), Math.max(50, options.sizing.idleMs / 2));
    this.#timer.unref();
  }

  /** The member for the next call (the least loaded, after growing the pool if every one is full). */
  pick(): PoolMember {
    if (this.#closed) throw new Error("the client is closed");
    let best = this.#leastLoaded();
    const total = this.#total();
    if (this.#sizer.decide(this.#members.length, total, best.inFlight, Date.now()) === "grow") {
      best = this.#open();
    }
    return best;
  }

  stats(): PoolStats {
    return {
      size: this.#members.length,
      opened: this.#opened,
      inFlight: this.#total() + [...this.#draining].reduce((n, m) => n + m.inFlight, 0),
      perChannel: this.#members.map((m) => m.inFlight),
    };
  }

  members(): readonly PoolMember[] {
    return this.#members;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const m of [...this.#members, ...this.#draining]) m.client.close();
    this.#members.length = 0;
    this.#draining.clear();
  }

  #leastLoaded(): PoolMember {
    let best = this.#members[0]!;
    for (const m of this.#members) if (m.inFlight < best.inFlight) best = m;
    return best;
  }

  #total(): number {
    let n = 0;
    for (const m of this.#members) n += m.inFlight;
    return n;
  }

  #resize(now: number): void {
    if (this.#closed || this.#members.length === 0) return;
    const decision = this.#sizer.decide(
      this.#members.length,
      this.#total(),
      this.#leastLoaded().inFlight,
      now,
    );
    if (decision === "grow") this.#open();
    else if (decision === "shrink") {
      // The newest member leaves: the oldest ones keep their warm connections.
      const m = this.#members.pop()!;
      m.draining = true;
      if (m.inFlight === 0) m.client.close();
      else this.#draining.add(m);
    }
  }

  #open(): PoolMember {
    const id = ++this.#opened;
    const o = this.#options;
    // Counting comes first so that a call refused by the limiter is still counted down.
    const member: PoolMember = {
      client: undefined as unknown as grpc.Client,
      inFlight: 0,
      draining: false,
      id,
    };
    const counter: grpc.Interceptor = (options, nextCall) =>
      new grpc.InterceptingCall(nextCall(options), {
        start: (metadata, _listener, next) => {
          member.inFlight++;
          let ended = false;
          next(metadata, {
            onReceiveStatus: (status, nextStatus) => {
              if (!ended) {
                ended = true;
                member.inFlight--;
                if (member.draining && member.inFlight === 0) {
                  this.#draining.delete(member);
                  member.client.close();
                }
              }
              nextStatus(status);
            },
          });
        },
      });
    (member as { client: grpc.Client }).client = new grpc.Client(o.target, o.credentials, {
      ...o.channelOptions,
      "grpc.use_local_subchannel_pool": 1,
      interceptors: [counter, ...o.interceptors],
    });
    this.#members.push(member);
    return member;
  }
}
