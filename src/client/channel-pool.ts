import * as grpc from "@grpc/grpc-js";
import { meteredChannelOptions, registerMeter } from "./pool-meter.ts";
import { PoolSizer, type PoolSizingConfig } from "./pool-sizing.ts";

/**
 * Several grpc-js channels to one target, so calls past a server's MAX_CONCURRENT_STREAMS go out on
 * another connection instead of waiting inside the first. Each member is a grpc.Channel of its own
 * with `grpc.use_local_subchannel_pool` (without it grpc-js shares subchannels, and so connections,
 * between channels with the same target and options); `PoolSizer` decides when to open one more or
 * close one.
 *
 * The pool is itself a grpc.Channel (`pool.channel`, given to a grpc.Client as `channelOverride`)
 * whose calls choose their member only when they start: a call held back by an interceptor above
 * (the concurrency limiter) is on no member while it waits, so waiting calls neither count as
 * demand nor pile onto the member that was emptiest when they were made. A started call goes to the
 * member with the fewest calls; a member taken out ("draining") closes when its last call ends.
 *
 * A member is full at the servers' stream limit times its READY connections (one per backend under
 * round_robin or Roster's policies), which grpc-js tells the pool through `roster_pool_meter`
 * (pool-meter.ts), a policy wrapped around the member's own that adds nothing to a call's path.
 */
export interface PoolMember {
  readonly channel: grpc.Channel;
  /** A grpc-js client on this member's channel alone (for callers that pick, then call, themselves). */
  readonly client: grpc.Client;
  /** Calls started on this member and not yet ended. */
  inFlight: number;
  /** Its READY connections, as grpc-js reports them (0 until the first connects). */
  connections: number;
  draining: boolean;
  readonly id: number;
}

export interface ChannelPoolOptions {
  target: string;
  credentials: grpc.ChannelCredentials;
  channelOptions: grpc.ChannelOptions;
  sizing: PoolSizingConfig;
}

export interface PoolStats {
  /** Members taking calls. */
  size: number;
  /** Members ever opened. */
  opened: number;
  /** Calls started and not ended, draining members included. */
  inFlight: number;
  perChannel: number[];
  /** READY connections per member taking calls. */
  connections: number[];
}

type CallStream = grpc.experimental.CallStream;
type Listener = Parameters<CallStream["start"]>[1];

export class ChannelPool {
  readonly #options: ChannelPoolOptions;
  readonly #sizer: PoolSizer;
  readonly #members: PoolMember[] = [];
  readonly #draining = new Set<PoolMember>();
  readonly #timer: NodeJS.Timeout;
  #opened = 0;
  /** Calls in flight on the members taking calls (not on draining ones). */
  #total = 0;
  /** The fewest READY connections of a member taking calls (the sizer's `connections`). */
  #connections = 0;
  readonly #meters = new Map<PoolMember, () => void>();
  #closed = false;
  /** The pool as one grpc-js channel, for `new grpc.Client(target, creds, { channelOverride })`. */
  readonly channel: grpc.ChannelInterface;

  constructor(options: ChannelPoolOptions) {
    this.#options = options;
    this.#sizer = new PoolSizer(options.sizing);
    for (let i = 0; i < options.sizing.min; i++) this.#open();
    // Demand that stops entirely makes no call to notice it: a timer looks now and then.
    this.#timer = setInterval(() => this.#resize(Date.now()), Math.max(50, options.sizing.idleMs / 2));
    this.#timer.unref();
    this.channel = this.#asChannel();
  }

  /**
   * The member for a call starting now (the least loaded, after growing if every one is full). The
   * caller counts the call on it with `started(member)` and ends it with exactly one `ended(member)`.
   */
  pick(): PoolMember {
    if (this.#closed) throw new Error("the client is closed");
    const members = this.#members;
    let least = members[0]!;
    for (let i = 1; i < members.length; i++) if (members[i]!.inFlight < least.inFlight) least = members[i]!;
    const decision = this.#sizer.decide(
      members.length,
      this.#total,
      least.inFlight,
      Date.now(),
      this.#connections,
    );
    if (decision === "keep") return least;
    if (decision === "grow") return this.#open();
    this.#shrink();
    return this.#leastLoaded();
  }

  /** A call picked `member` and starts on it. */
  started(member: PoolMember): void {
    member.inFlight++;
    if (!member.draining) this.#total++;
  }

  /** A call on `member` ended (once per `started`). */
  ended(member: PoolMember): void {
    member.inFlight--;
    if (!member.draining) this.#total--;
    else if (member.inFlight === 0) {
      this.#draining.delete(member);
      this.#closeMember(member);
    }
  }

  stats(): PoolStats {
    let draining = 0;
    for (const m of this.#draining) draining += m.inFlight;
    return {
      size: this.#members.length,
      opened: this.#opened,
      inFlight: this.#total + draining,
      perChannel: this.#members.map((m) => m.inFlight),
      connections: this.#members.map((m) => m.connections),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const m of [...this.#members, ...this.#draining]) this.#closeMember(m);
    this.#draining.clear();
  }

  #closeMember(m: PoolMember): void {
    this.#meters.get(m)?.();
    this.#meters.delete(m);
    m.channel.close();
  }

  #updateConnections(): void {
    let least = Infinity;
    for (const m of this.#members) if (m.connections < least) least = m.connections;
    this.#connections = least === Infinity ? 0 : least;
  }

  #leastLoaded(): PoolMember {
    let best = this.#members[0]!;
    for (const m of this.#members) if (m.inFlight < best.inFlight) best = m;
    return best;
  }

  #resize(now: number): void {
    if (this.#closed || this.#members.length === 0) return;
    const decision = this.#sizer.decide(
      this.#members.length,
      this.#total,
      this.#leastLoaded().inFlight,
      now,
      this.#connections,
    );
    if (decision === "grow") this.#open();
    else if (decision === "shrink") this.#shrink();
  }

  #shrink(): void {
    // The newest member leaves: the oldest ones keep their warm connections.
    const m = this.#members.pop()!;
    m.draining = true;
    this.#total -= m.inFlight;
    this.#updateConnections();
    if (m.inFlight === 0) this.#closeMember(m);
    else this.#draining.add(m);
  }

  #open(): PoolMember {
    const o = this.#options;
    let member: PoolMember | undefined;
    const meter = registerMeter((ready) => {
      if (member === undefined || member.draining) return;
      member.connections = ready;
      this.#updateConnections();
    });
    const channel = new grpc.Channel(o.target, o.credentials, {
      ...meteredChannelOptions(o.channelOptions, meter.id),
      "grpc.use_local_subchannel_pool": 1,
    });
    const client = new grpc.Client(o.target, o.credentials, { channelOverride: channel });
    member = { channel, client, inFlight: 0, connections: 0, draining: false, id: ++this.#opened };
    this.#meters.set(member, meter.dispose);
    this.#members.push(member);
    this.#updateConnections();
    return member;
  }

  #asChannel(): grpc.ChannelInterface {
    const first = () => this.#members[0]?.channel;
    return {
      close: () => this.close(),
      getTarget: () => this.#options.target,
      getConnectivityState: (tryToConnect) =>
        first()?.getConnectivityState(tryToConnect) ?? grpc.connectivityState.SHUTDOWN,
      watchConnectivityState: (current, deadline, callback) => {
        const c = first();
        if (c === undefined) callback(new Error("the client is closed"));
        else c.watchConnectivityState(current, deadline, callback);
      },
      getChannelzRef: () => this.#members[0]!.channel.getChannelzRef(),
      createCall: (method, deadline, host, parentCall, propagateFlags) =>
        new PooledCall(this, method, deadline, host, parentCall, propagateFlags),
    };
  }
}

/**
 * One call on the pool: a grpc-js Call that creates the real call on a member when it starts.
 * Before that it keeps what grpc-js may send ahead of start (credentials, a read request; a
 * cancel, which then ends the call at start). It is also the real call's listener (one object per
 * call, no closures).
 */
class PooledCall implements CallStream {
  #real: CallStream | undefined;
  #member: PoolMember | undefined;
  #listener: Listener | undefined;
  #credentials: grpc.CallCredentials | undefined;
  #readPending = false;
  #halfClosePending = false;
  #cancelled: { code: grpc.status; details: string } | undefined;

  readonly #pool: ChannelPool;
  readonly #method: string;
  readonly #deadline: grpc.Deadline;
  readonly #host: string | null | undefined;
  readonly #parentCall: Parameters<grpc.ChannelInterface["createCall"]>[3];
  readonly #propagateFlags: number | null | undefined;

  constructor(pool: ChannelPool, ...args: Parameters<grpc.ChannelInterface["createCall"]>) {
    this.#pool = pool;
    [this.#method, this.#deadline, this.#host, this.#parentCall, this.#propagateFlags] = args;
  }

  start(metadata: grpc.Metadata, listener: Listener): void {
    if (this.#cancelled !== undefined) {
      const { code, details } = this.#cancelled;
      process.nextTick(() => listener.onReceiveStatus({ code, details, metadata: new grpc.Metadata() }));
      return;
    }
    let member: PoolMember;
    try {
      member = this.#pool.pick();
    } catch (err) {
      const details = (err as Error).message;
      process.nextTick(() =>
        listener.onReceiveStatus({ code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() }),
      );
      return;
    }
    const real = member.channel.createCall(
      this.#method,
      this.#deadline,
      this.#host,
      this.#parentCall,
      this.#propagateFlags,
    );
    this.#real = real;
    if (this.#credentials !== undefined) real.setCredentials(this.#credentials);
    this.#pool.started(member);
    this.#member = member;
    this.#listener = listener;
    real.start(metadata, this);
    if (this.#readPending) real.startRead();
    if (this.#halfClosePending) real.halfClose();
  }

  // The real call's listener.
  onReceiveMetadata(metadata: grpc.Metadata): void {
    this.#listener!.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: Buffer): void {
    this.#listener!.onReceiveMessage(message);
  }

  onReceiveStatus(status: grpc.StatusObject): void {
    const member = this.#member;
    if (member !== undefined) {
      this.#member = undefined;
      this.#pool.ended(member);
    }
    this.#listener!.onReceiveStatus(status);
  }

  cancelWithStatus(status: grpc.status, details: string): void {
    if (this.#real !== undefined) this.#real.cancelWithStatus(status, details);
    else this.#cancelled ??= { code: status, details };
  }
  getPeer(): string {
    return this.#real?.getPeer() ?? "";
  }

  sendMessageWithContext(
    context: Parameters<CallStream["sendMessageWithContext"]>[0],
    message: Buffer,
  ): void {
    if (this.#real !== undefined) this.#real.sendMessageWithContext(context, message);
    else context.callback?.(); // only after a cancel before start: nothing will be sent
  }

  startRead(): void {
    if (this.#real !== undefined) this.#real.startRead();
    else this.#readPending = true;
  }

  halfClose(): void {
    if (this.#real !== undefined) this.#real.halfClose();
    else this.#halfClosePending = true;
  }

  getCallNumber(): number {
    return this.#real?.getCallNumber() ?? 0;
  }

  setCredentials(credentials: grpc.CallCredentials): void {
    if (this.#real !== undefined) this.#real.setCredentials(credentials);
    else this.#credentials = credentials;
  }

  getAuthContext(): ReturnType<CallStream["getAuthContext"]> {
    return this.#real?.getAuthContext() ?? null;
  }
}
