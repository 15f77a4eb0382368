import * as grpc from "@grpc/grpc-js";
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
 */
export interface PoolMember {
  readonly channel: grpc.Channel;
  /** Calls started on this member and not yet ended. */
  inFlight: number;
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

  /** The member for a call starting now (the least loaded, after growing if every one is full). */
  pick(): PoolMember {
    if (this.#closed) throw new Error("the client is closed");
    const least = this.#leastLoaded();
    const decision = this.#sizer.decide(this.#members.length, this.#total(), least.inFlight, Date.now());
    if (decision === "grow") return this.#open();
    if (decision === "shrink") this.#shrink();
    return this.#leastLoaded();
  }

  stats(): PoolStats {
    let draining = 0;
    for (const m of this.#draining) draining += m.inFlight;
    return {
      size: this.#members.length,
      opened: this.#opened,
      inFlight: this.#total() + draining,
      perChannel: this.#members.map((m) => m.inFlight),
    };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    for (const m of [...this.#members, ...this.#draining]) m.channel.close();
    this.#draining.clear();
  }

  #callEnded(member: PoolMember): void {
    member.inFlight--;
    if (member.draining && member.inFlight === 0) {
      this.#draining.delete(member);
      member.channel.close();
    }
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
    else if (decision === "shrink") this.#shrink();
  }

  #shrink(): void {
    // The newest member leaves: the oldest ones keep their warm connections.
    const m = this.#members.pop()!;
    m.draining = true;
    if (m.inFlight === 0) m.channel.close();
    else this.#draining.add(m);
  }

  #open(): PoolMember {
    const o = this.#options;
    const channel = new grpc.Channel(o.target, o.credentials, {
      ...o.channelOptions,
      "grpc.use_local_subchannel_pool": 1,
    });
    const member: PoolMember = { channel, inFlight: 0, draining: false, id: ++this.#opened };
    this.#members.push(member);
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
        new PooledCall(this, (m) => this.#callEnded(m), method, deadline, host, parentCall, propagateFlags),
    };
  }
}

/**
 * One call on the pool: a grpc-js Call that creates the real call on a member when it starts.
 * Before that it keeps what grpc-js may send ahead of start (credentials, a read request; a
 * cancel, which then ends the call at start).
 */
class PooledCall implements CallStream {
  #real: CallStream | undefined;
  #credentials: grpc.CallCredentials | undefined;
  #readPending = false;
  #halfClosePending = false;
  #cancelled: { code: grpc.status; details: string } | undefined;

  readonly #pool: ChannelPool;
  readonly #ended: (m: PoolMember) => void;
  readonly #args: Parameters<grpc.ChannelInterface["createCall"]>;

  constructor(
    pool: ChannelPool,
    ended: (m: PoolMember) => void,
    ...args: Parameters<grpc.ChannelInterface["createCall"]>
  ) {
    this.#pool = pool;
    this.#ended = ended;
    this.#args = args;
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
    const real = member.channel.createCall(...this.#args);
    this.#real = real;
    if (this.#credentials !== undefined) real.setCredentials(this.#credentials);
    member.inFlight++;
    let done = false;
    real.start(metadata, {
      onReceiveMetadata: (m) => listener.onReceiveMetadata(m),
      onReceiveMessage: (m) => listener.onReceiveMessage(m),
      onReceiveStatus: (status) => {
        if (!done) {
          done = true;
          this.#ended(member);
        }
        listener.onReceiveStatus(status);
      },
    });
    if (this.#readPending) real.startRead();
    if (this.#halfClosePending) real.halfClose();
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
