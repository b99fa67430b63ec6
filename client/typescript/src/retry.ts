/**
 * When to try a stream again, and how long to wait first (as the Python SDK's client/retry.py).
 * Retrying is only safe because the service is idempotent by event id (ingest) and replays by
 * sequence (subscriptions).
 */

import { Code } from "@connectrpc/connect";

/** Milliseconds a unary call (or one ingest attempt) may take unless the caller says otherwise. */
export const DEFAULT_TIMEOUT_MS = 5_000;

/** Ingest reopens its stream on these and resends whatever was not acked. */
export const INGEST_RETRY_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.Aborted]);

/**
 * A subscription reconnects from its cursor on these. RESOURCE_EXHAUSTED is how the service
 * ends the stream of a consumer too slow for its queue. ABORTED is how Connect for Node
 * reports a connection reset (ECONNRESET) where grpc-core says UNAVAILABLE; the service never
 * ends a subscription with it, and resuming from the cursor is safe whatever the cause.
 */
export const SUBSCRIBE_RESUME_CODES: ReadonlySet<Code> = new Set([Code.Unavailable, Code.ResourceExhausted, Code.Aborted]);

/** Exponential back-off with jitter, so clients of a restarting service do not reconnect in lockstep. */
export class Backoff {
  constructor(
    readonly initialMs = 100,
    readonly maximumMs = 5_000,
    readonly multiplier = 2,
    /** Each delay is shortened by up to this fraction, at random. */
    readonly jitter = 0.2,
  ) {
    if (initialMs < 0 || maximumMs < 0 || multiplier < 1 || jitter < 0 || jitter > 1) {
      throw new RangeError(`invalid back-off ${JSON.stringify(this)}`);
    }
  }

  /** Milliseconds to wait after `failures` consecutive failures (1 for the first). */
  delayMs(failures: number): number {
    if (failures <= 0) return 0;
    const base = Math.min(this.maximumMs, this.initialMs * this.multiplier ** Math.min(failures - 1, 64));
    return base * (1 - this.jitter * Math.random());
  }
}
