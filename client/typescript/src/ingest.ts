/**
 * The ingest bookkeeping, no transport in here (the Python SDK's client/batching.py, mirrored).
 *
 * An `IngestSession` follows one `ingest` call across stream attempts. Each attempt packs the
 * events still without an ack into batches; the service answers every batch with one response,
 * in order, holding one ack per event in event order. Because the service is idempotent by
 * event id, resending an event whose ack was lost is safe: a second copy is acked DUPLICATE
 * with its original sequence.
 */

import { create } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomUUID } from "node:crypto";

import { toAmount, toOptionalAmount } from "./amounts.js";
import type { Amount } from "./amounts.js";
import { Code, PortfolioError, ProtocolViolation } from "./errors.js";
import {
  ExecutionEventSchema,
  IngestRequestSchema,
  OrderStatus,
  Side,
} from "./gen/portfolio/v1/portfolio_pb.js";
import type { EventAck, ExecutionEvent as ExecutionEventMessage, IngestRequest, IngestResponse } from "./gen/portfolio/v1/portfolio_pb.js";

/** The most events the service takes in one IngestRequest. */
export const MAX_BATCH_SIZE = 10_000;

/** When something happened: a Date (millisecond precision) or a protobuf Timestamp. */
export type When = Date | Timestamp;

export interface FillEvent {
  kind: "fill";
  fillId: string;
  accountId: string;
  strategyId: string;
  instrumentId: string;
  side: Side | "BUY" | "SELL";
  /** > 0. */
  quantity: Amount;
  price: Amount;
  /** The fill's whole commission; absent means "0". Negative for a rebate. */
  commission?: Amount;
  commissionCurrency?: string;
  timestamp: When;
  orderRef?: string;
  venue?: string;
  traceId?: string;
  orderId?: string;
  /** The fill_id of the execution this one corrects. */
  corrects?: string;
}

export interface OrderStatusEvent {
  kind: "status";
  updateId: string;
  accountId: string;
  strategyId?: string;
  orderRef?: string;
  orderId?: string;
  instrumentId?: string;
  status: OrderStatus;
  filledQuantity?: Amount;
  remainingQuantity?: Amount;
  avgFillPrice?: Amount;
  timestamp: When;
  side?: Side | "BUY" | "SELL";
  permId?: string;
}

export interface CashTransferEvent {
  kind: "transfer";
  transferId: string;
  accountId: string;
  currency: string;
  /** Not zero: > 0 deposits, < 0 withdraws. */
  amount: Amount;
  timestamp: When;
  chainId?: string;
  note?: string;
}

export interface CommissionAmendmentEvent {
  kind: "commission";
  amendmentId: string;
  accountId: string;
  fillId: string;
  commission: Amount;
  commissionCurrency?: string;
  timestamp: When;
}

/** One event for `PortfolioClient.ingest`. */
export type ExecutionEvent = FillEvent | OrderStatusEvent | CashTransferEvent | CommissionAmendmentEvent;

/** The event's idempotency key: the id its ack carries. */
export function eventId(event: ExecutionEvent): string {
  switch (event.kind) {
    case "fill":
      return event.fillId;
    case "status":
      return event.updateId;
    case "transfer":
      return event.transferId;
    case "commission":
      return event.amendmentId;
  }
}

/**
 * The event's wire message. Throws a TypeError naming the event and field for a number (or a
 * malformed decimal) in an amount, so a bad event stops the whole call before anything is sent.
 */
export function encodeEvent(event: ExecutionEvent): ExecutionEventMessage {
  const where = (field: string) => `${event.kind} ${JSON.stringify(eventId(event))}: ${field}`;
  switch (event.kind) {
    case "fill":
      return create(ExecutionEventSchema, {
        event: {
          case: "fill",
          value: {
            fillId: event.fillId,
            accountId: event.accountId,
            strategyId: event.strategyId,
            instrumentId: event.instrumentId,
            side: toSide(event.side),
            quantity: toAmount(where("quantity"), event.quantity),
            price: toAmount(where("price"), event.price),
            commission: toOptionalAmount(where("commission"), event.commission),
            commissionCurrency: event.commissionCurrency ?? "",
            timestamp: toTimestamp(event.timestamp),
            orderRef: event.orderRef ?? "",
            venue: event.venue ?? "",
            traceId: event.traceId ?? "",
            orderId: event.orderId ?? "",
            corrects: event.corrects ?? "",
          },
        },
      });
    case "status":
      return create(ExecutionEventSchema, {
        event: {
          case: "status",
          value: {
            updateId: event.updateId,
            accountId: event.accountId,
            strategyId: event.strategyId ?? "",
            orderRef: event.orderRef ?? "",
            orderId: event.orderId ?? "",
            instrumentId: event.instrumentId ?? "",
            status: event.status,
            filledQuantity: toOptionalAmount(where("filled_quantity"), event.filledQuantity),
            remainingQuantity: toOptionalAmount(where("remaining_quantity"), event.remainingQuantity),
            avgFillPrice: toOptionalAmount(where("avg_fill_price"), event.avgFillPrice),
            timestamp: toTimestamp(event.timestamp),
            side: event.side === undefined ? Side.UNSPECIFIED : toSide(event.side),
            permId: event.permId ?? "",
          },
        },
      });
    case "transfer":
      return create(ExecutionEventSchema, {
        event: {
          case: "transfer",
          value: {
            transferId: event.transferId,
            accountId: event.accountId,
            currency: event.currency,
            amount: toAmount(where("amount"), event.amount),
            timestamp: toTimestamp(event.timestamp),
            chainId: event.chainId ?? "",
            note: event.note ?? "",
          },
        },
      });
    case "commission":
      return create(ExecutionEventSchema, {
        event: {
          case: "commission",
          value: {
            amendmentId: event.amendmentId,
            accountId: event.accountId,
            fillId: event.fillId,
            commission: toAmount(where("commission"), event.commission),
            commissionCurrency: event.commissionCurrency ?? "",
            timestamp: toTimestamp(event.timestamp),
          },
        },
      });
    default:
      throw new TypeError(`unknown event kind ${JSON.stringify((event as { kind?: unknown }).kind)}`);
  }
}

function toSide(side: Side | "BUY" | "SELL"): Side {
  if (side === "BUY") return Side.BUY;
  if (side === "SELL") return Side.SELL;
  return side;
}

function toTimestamp(when: When): Timestamp {
  if (when instanceof Date) {
    if (Number.isNaN(when.getTime())) throw new TypeError("timestamp: an invalid Date");
    return timestampFromDate(when);
  }
  return when;
}

/** One IngestRequest and where its events sit in the caller's input. */
export interface Batch {
  readonly batchId: string;
  /** Indices into the session's events, in the order they were packed. */
  readonly indices: readonly number[];
  readonly request: IngestRequest;
}

/** Ingest gave up: what was acked and what was not (resend `unacked` later: it is safe). */
export class IngestIncomplete extends PortfolioError {
  override name = "IngestIncomplete";
  constructor(
    code: Code,
    message: string,
    readonly acks: readonly EventAck[],
    readonly unacked: readonly ExecutionEvent[],
    options?: { cause?: unknown },
  ) {
    super(code, `${message} (${acks.length} events acked, ${unacked.length} unacked)`, [], options);
  }
}

/** The acks of one `ingest` call, matched to its events across stream attempts. */
export class IngestSession {
  attempts = 0;
  private readonly events: readonly ExecutionEvent[];
  private readonly encoded: readonly ExecutionEventMessage[];
  private readonly ackOf: (EventAck | undefined)[];
  private inFlight: Batch[] = [];
  private readonly sessionId = randomUUID().replaceAll("-", "").slice(0, 12);
  private batchNumber = 0;

  constructor(events: Iterable<ExecutionEvent>, private readonly batchSize: number) {
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
      throw new RangeError(`batchSize must be 1..${MAX_BATCH_SIZE}, got ${batchSize}`);
    }
    this.events = [...events];
    // Encode up front: a bad amount fails before anything is sent.
    this.encoded = this.events.map(encodeEvent);
    this.ackOf = this.events.map(() => undefined);
  }

  /** True once every event has an ack. */
  get done(): boolean {
    return this.ackOf.every((ack) => ack !== undefined);
  }

  /**
   * The batches for a new stream: every event without an ack, in input order. Batches of an
   * earlier attempt still waiting for an answer are forgotten: that stream is gone, and their
   * events are packed again here.
   */
  startAttempt(): Batch[] {
    this.attempts += 1;
    const pending = this.ackOf.flatMap((ack, index) => (ack === undefined ? [index] : []));
    const batches: Batch[] = [];
    for (let start = 0; start < pending.length; start += this.batchSize) {
      const indices = pending.slice(start, start + this.batchSize);
      this.batchNumber += 1;
      const batchId = `${this.sessionId}-${this.attempts}-${this.batchNumber}`;
      const request = create(IngestRequestSchema, { batchId, events: indices.map((i) => this.encoded[i]!) });
      batches.push({ batchId, indices, request });
    }
    this.inFlight = [...batches];
    return batches;
  }

  /**
   * Matches one response to the oldest batch still waiting for an answer. Throws
   * PortfolioError(INVALID_ARGUMENT) when the service refused the batch as a whole, and
   * ProtocolViolation when the response does not fit the batch it answers.
   */
  record(response: IngestResponse): Batch {
    const batch = this.inFlight.shift();
    if (batch === undefined) throw new ProtocolViolation(`ingest response ${JSON.stringify(response.batchId)} matches no batch`);
    if (response.batchId !== batch.batchId) {
      throw new ProtocolViolation(`ingest response for batch ${JSON.stringify(response.batchId)}, expected ${JSON.stringify(batch.batchId)}`);
    }
    if (response.batchRejectedReason !== "" && response.acks.length === 0) {
      throw new PortfolioError(Code.InvalidArgument, `batch ${batch.batchId} refused: ${response.batchRejectedReason}`);
    }
    if (response.acks.length !== batch.indices.length) {
      throw new ProtocolViolation(`batch ${batch.batchId} of ${batch.indices.length} events got ${response.acks.length} acks`);
    }
    batch.indices.forEach((index, position) => {
      const expected = eventId(this.events[index]!);
      const got = response.acks[position]!.eventId;
      if (got !== expected) {
        throw new ProtocolViolation(`batch ${batch.batchId}: ack for ${JSON.stringify(got)} where ${JSON.stringify(expected)} was sent`);
      }
    });
    batch.indices.forEach((index, position) => {
      this.ackOf[index] = response.acks[position]!;
    });
    return batch;
  }

  /** Every ack, in the order of the input events; only once `done`. */
  acks(): EventAck[] {
    if (!this.done) throw new Error("ingest session is not complete");
    return this.ackOf as EventAck[];
  }

  /** The error to throw when giving up, carrying what was acked and what was not. */
  incomplete(code: Code, message: string, cause?: unknown): IngestIncomplete {
    const acked = this.ackOf.filter((ack): ack is EventAck => ack !== undefined);
    const unacked = this.events.filter((_, index) => this.ackOf[index] === undefined);
    return new IngestIncomplete(code, `gave up after ${this.attempts} attempts: ${message}`, acked, unacked, { cause });
  }
}
