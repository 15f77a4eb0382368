/**
 * The channel's timers (the outlier detection interval, the readiness wake-up, discovery retries), as
 * an argument so tests run them on a fake clock (test/support/fake-timer.ts).
 *
 * Contract: `fn` is never called synchronously from `setTimeout`/`setInterval`; the returned function
 * cancels, and cancelling twice (or after the timeout fired) does nothing. Timers must not keep the
 * process alive (the system timer unrefs them): the channel is not what keeps a server running.
 */
export interface Timer {
  setTimeout(fn: () => void, ms: number): () => void;
  setInterval(fn: () => void, ms: number): () => void;
}

/** Node's timers, unref'd. */
export const systemTimer: Timer = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  },
  setInterval(fn, ms) {
    const t = setInterval(fn, ms);
    t.unref();
    return () => clearInterval(t);
  },
};
