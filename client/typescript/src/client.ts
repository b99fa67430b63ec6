/**
 * The typed client: every RPC through `raw` (the generated Connect client), plus the parts that
 * need more than one call to get right: `ingest` (resends unacked events on a new stream) and
 * `subscribe` (resumes from the last sequence seen). Every call has a deadline, refuses a
 * JavaScript number where the proto wants a string (an amount), and fails with a
 * PortfolioError carrying the decoded `google.rpc.BadRequest`.
 */

import { create } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import type { CallOptions, Client, Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import type * as http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";

import { refuseNonStrings } from "./amounts.js";
import { Code, PortfolioError, asConnectionFailure, toPortfolioError } from "./errors.js";
import { IngestSession } from "./ingest.js";
import type { Batch, ExecutionEvent } from "./ingest.js";
import { ResumeCursor } from "./resume.js";
import { Backoff, DEFAULT_TIMEOUT_MS, INGEST_RETRY_CODES, SUBSCRIBE_RESUME_CODES } from "./retry.js";
import {
  GetPositionRequestSchema,
  PortfolioManager,
  PortfolioQuerySchema,
  SubscribeUpdatesRequestSchema,
  UpdateKind,
} from "./gen/portfolio/v1/portfolio_pb.js";
import type { EventAck, IngestRequest, PortfolioResponse, PortfolioUpdate, Position } from "./gen/portfolio/v1/portfolio_pb.js";

export interface ClientOptions {
  /** "host:port" (plaintext HTTP/2), or "http://host:port" / "https://host:port". */
  target: string;
  /** The deadline of each unary call and each ingest attempt, unless a call says otherwise. */
  timeoutMs?: number;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Node's HTTP/2 options: `ca`, `cert`, `key` for TLS and mTLS. */
  nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Connect interceptors, e.g. to add headers or log. */
  interceptors?: Interceptor[];
  /** How long to wait between stream attempts. */
  backoff?: Backoff;
}

export interface IngestOptions {
  /** Events per IngestRequest (1..10,000); per-message cost dominates, so batch. */
  batchSize?: number;
  /** Streams to try before throwing IngestIncomplete. */
  maxAttempts?: number;
  /** The deadline of each attempt. */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Called after each batch's acks are recorded (progress; tests cut the stream here). */
  onBatchAcked?: (batch: Batch, acks: readonly EventAck[]) => void;
}

export interface SubscribeFilter {
  accountId?: string;
  strategyId?: string;
  instrumentId?: string;
  level?: MessageInitShape<typeof SubscribeUpdatesRequestSchema>["level"];
  includeBalances?: boolean;
  includeMarks?: boolean;
  includeReconciliations?: boolean;
}

export interface SubscribeOptions {
  /** 0: live updates only. N > 0: replay every update with sequence >= N first. */
  fromSequence?: bigint;
  /** Yield heartbeats too (they always advance the resume point). */
  includeHeartbeats?: boolean;
  /** Resubscribe from the cursor after UNAVAILABLE, RESOURCE_EXHAUSTED, a reset connection or a stream the service ended (default true). */
  reconnect?: boolean;
  /** Ends the subscription (the generator returns). */
  signal?: AbortSignal;
  /** Called before each resubscription, with the sequence it resumes from and why. */
  onReconnect?: (fromSequence: bigint, reason: unknown) => void;
}

export type PortfolioQueryInit = MessageInitShape<typeof PortfolioQuerySchema>;

export class PortfolioClient {
  /** Every RPC of portfolio.v1, generated; with the deadline, number refusal and error decoding. */
  readonly raw: Client<typeof PortfolioManager>;
  readonly timeoutMs: number;
  private readonly backoff: Backoff;
  private readonly sessions: Http2SessionManager;
  private readonly tls: boolean;
  private closed = false;

  constructor(options: ClientOptions) {
    const baseUrl = /^https?:\/\//.test(options.target) ? options.target : `http://${options.target}`;
    this.tls = baseUrl.startsWith("https://");
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.backoff = options.backoff ?? new Backoff();
    this.sessions = new Http2SessionManager(baseUrl, {}, options.nodeOptions);
    const interceptors = [...(options.interceptors ?? [])];
    if (options.token !== undefined) interceptors.unshift(bearer(options.token));
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.sessions,
      defaultTimeoutMs: this.timeoutMs,
      interceptors,
    });
    this.raw = guarded(createClient(PortfolioManager, transport), (error, signal, subscription) =>
      this.failure(error, signal, subscription),
    );
  }

  /** What a failed call throws: a PortfolioError with its details decoded, a connection that
   * failed under the call as UNAVAILABLE (see asConnectionFailure). */
  private failure(error: unknown, signal: AbortSignal | undefined, subscription: boolean): unknown {
    const failure = toPortfolioError(error, { subscription });
    if (!(failure instanceof PortfolioError)) return failure;
    return asConnectionFailure(failure, { asked: this.closed || isAborted(signal), tls: this.tls });
  }

  /** Closes the connection: calls in progress fail with CANCELLED, and streams stop retrying. */
  async close(): Promise<void> {
    this.closed = true;
    // Aborting while a connection is being made rejects a promise nobody may be awaiting
    // (an unhandled rejection in Connect): let the attempt settle first.
    if (this.sessions.state() === "connecting") await this.sessions.connect().catch(() => undefined);
    this.sessions.abort();
  }

  /** One position row: a strategy's, or the account-level row when strategyId is absent. */
  getPosition(request: MessageInitShape<typeof GetPositionRequestSchema>, options?: CallOptions): Promise<Position> {
    return this.raw.getPosition(request, options);
  }

  /** Any read query, answered in the matching branch of `response`. */
  query(query: PortfolioQueryInit, options?: CallOptions): Promise<PortfolioResponse> {
    return this.raw.query(create(PortfolioQuerySchema, query), options);
  }

  /**
   * Sends events and returns their acks, in the order of `events`. Batches are written while
   * acks are read; REJECTED is an answer, not an exception. A stream that breaks (UNAVAILABLE,
   * DEADLINE_EXCEEDED, ABORTED, or ended before every ack) is reopened and every event without
   * an ack is sent again: safe, as the service is exactly-once by event id (an event that had
   * been applied comes back DUPLICATE with its original sequence). After `maxAttempts` streams:
   * IngestIncomplete, with the acks and the unacked events. A number in an amount throws a
   * TypeError before anything is sent.
   */
  async ingest(events: Iterable<ExecutionEvent>, options: IngestOptions = {}): Promise<EventAck[]> {
    const maxAttempts = options.maxAttempts ?? 3;
    if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new RangeError(`maxAttempts must be >= 1, got ${maxAttempts}`);
    const session = new IngestSession(events, options.batchSize ?? 100);
    while (!session.done) {
      if (session.attempts > 0) await sleep(this.backoff.delayMs(session.attempts), undefined, { signal: options.signal });
      const failure = await this.ingestAttempt(session, options);
      if (session.done) break;
      if (session.attempts >= maxAttempts) throw session.incomplete(failure.code, failure.rawMessage, failure);
    }
    return session.acks();
  }

  /** One stream; returns why it ended short of all acks (retryable), else throws. */
  private async ingestAttempt(session: IngestSession, options: IngestOptions): Promise<PortfolioError> {
    const batches = session.startAttempt();
    const stop = new AbortController();
    const signal = options.signal === undefined ? stop.signal : AbortSignal.any([stop.signal, options.signal]);
    try {
      const responses = this.raw.ingest(sendAll(batches.map((b) => b.request)), {
        timeoutMs: options.timeoutMs ?? this.timeoutMs,
        signal,
      });
      for await (const response of responses) {
        const batch = session.record(response);
        options.onBatchAcked?.(batch, response.acks);
      }
    } catch (error) {
      if (error instanceof PortfolioError && this.mayRetry(error, INGEST_RETRY_CODES, options.signal)) return error;
      throw error;
    } finally {
      stop.abort();
    }
    return new PortfolioError(Code.Unavailable, "the ingest stream ended before every batch was acked");
  }

  /**
   * Whether a stream failed in a way that trying again can cure. CANCELLED that neither the
   * caller nor close() asked for is the connection going away: Node resets the streams of a
   * lost HTTP/2 session with RST_STREAM(CANCEL), which Connect reports as CANCELLED (and
   * failure() already reports as UNAVAILABLE: the CANCELLED check is a second guard).
   */
  private mayRetry(error: PortfolioError, codes: ReadonlySet<Code>, callerSignal: AbortSignal | undefined): boolean {
    if (this.closed || isAborted(callerSignal)) return false;
    return codes.has(error.code) || error.code === Code.Canceled;
  }

  /**
   * Live updates, each delivered once across reconnects: after UNAVAILABLE,
   * RESOURCE_EXHAUSTED, a reset connection (or a stream the service ended), it resubscribes from the last sequence
   * seen and drops what it already delivered. A sequence older than the service's replay
   * buffer throws ResyncRequired. Batched updates are yielded one by one. Ends when `signal`
   * aborts, the client is closed, or the caller stops iterating.
   */
  async *subscribe(filter: SubscribeFilter = {}, options: SubscribeOptions = {}): AsyncGenerator<PortfolioUpdate, void, undefined> {
    const cursor = new ResumeCursor(options.fromSequence ?? 0n);
    const reconnect = options.reconnect ?? true;
    let failures = 0;
    while (!isAborted(options.signal)) {
      const request = create(SubscribeUpdatesRequestSchema, { ...filter, fromSequence: cursor.fromSequence });
      cursor.newStream();
      const stop = new AbortController();
      const signal = options.signal === undefined ? stop.signal : AbortSignal.any([stop.signal, options.signal]);
      let reason: unknown = new PortfolioError(Code.Unavailable, "the service ended the subscription");
      try {
        for await (const message of this.raw.subscribeUpdates(request, { signal, timeoutMs: 0 })) {
          failures = 0;
          for (const update of flatten(message)) {
            const heartbeat = update.kind === UpdateKind.HEARTBEAT;
            if (!cursor.admit(update.sequence, heartbeat)) continue;
            if (options.includeHeartbeats === true || !heartbeat) yield update;
          }
        }
      } catch (error) {
        if (isAborted(options.signal) || this.closed) return;
        const failure = toPortfolioError(error, { subscription: true });
        if (!(reconnect && failure instanceof PortfolioError && this.mayRetry(failure, SUBSCRIBE_RESUME_CODES, options.signal))) {
          throw failure;
        }
        reason = failure;
      } finally {
        stop.abort();
      }
      if (!reconnect || this.closed || isAborted(options.signal)) return;
      failures += 1;
      options.onReconnect?.(cursor.fromSequence, reason);
      try {
        await sleep(this.backoff.delayMs(failures), undefined, { signal: options.signal });
      } catch {
        return; // aborted while waiting
      }
    }
  }
}

function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

/** Writes every batch without waiting for acks, then half-closes the stream. */
async function* sendAll(requests: readonly IngestRequest[]): AsyncIterable<IngestRequest> {
  yield* requests;
}

/** A BATCH message's updates one by one; any other message as it is. */
function flatten(message: PortfolioUpdate): readonly PortfolioUpdate[] {
  return message.kind === UpdateKind.BATCH ? message.batch : [message];
}

/**
 * The generated client with the SDK's door in front of every method: string fields holding
 * anything else (a number in an amount) throw a TypeError before anything is sent, and every
 * failure becomes a PortfolioError with its details decoded. (Done around the client, not in a
 * Connect interceptor: Connect turns whatever an interceptor throws into a ConnectError.)
 */
function guarded(
  inner: Client<typeof PortfolioManager>,
  failed: (error: unknown, signal: AbortSignal | undefined, subscription: boolean) => unknown,
): Client<typeof PortfolioManager> {
  const methods = PortfolioManager.methods.map((method) => {
    const call = (inner as unknown as Record<string, (request: unknown, options?: CallOptions) => unknown>)[method.localName]!;
    const input = method.input;
    switch (method.methodKind) {
      case "unary":
        return [
          method.localName,
          async (request: unknown, options?: CallOptions) => {
            refuseNonStrings(input, request);
            try {
              return await call(request, options);
            } catch (error) {
              throw failed(error, options?.signal, false);
            }
          },
        ];
      case "server_streaming":
        return [
          method.localName,
          (request: unknown, options?: CallOptions) => {
            refuseNonStrings(input, request);
            // OUT_OF_RANGE on SubscribeUpdates is ResyncRequired.
            return rethrown(call(request, options) as AsyncIterable<unknown>, (error) =>
              failed(error, options?.signal, true),
            );
          },
        ];
      default:
        // Client and bidi streams: each message is checked as it is about to be written, and
        // the call fails with that TypeError (not the CANCELLED that Connect makes of it).
        return [
          method.localName,
          (requests: AsyncIterable<unknown>, options?: CallOptions) => {
            let refused: TypeError | undefined;
            const checked = (async function* () {
              for await (const request of requests) {
                try {
                  refuseNonStrings(input, request);
                } catch (error) {
                  refused = error as TypeError;
                  throw error;
                }
                yield request;
              }
            })();
            const answer = call(checked, options);
            const failure = (error: unknown) => refused ?? failed(error, options?.signal, false);
            return method.methodKind === "bidi_streaming"
              ? rethrown(answer as AsyncIterable<unknown>, failure)
              : (answer as Promise<unknown>).catch((error: unknown) => {
                  throw failure(error);
                });
          },
        ];
    }
  });
  return Object.fromEntries(methods) as Client<typeof PortfolioManager>;
}

async function* rethrown<T>(messages: AsyncIterable<T>, failure: (error: unknown) => unknown): AsyncGenerator<T, void, undefined> {
  try {
    yield* messages;
  } catch (error) {
    throw failure(error);
  }
}

function bearer(token: string): Interceptor {
  return (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
}
