/** The portfolio manager's TypeScript client: see README.md beside this folder. */

export { PortfolioClient } from "./client.js";
export type { ClientOptions, IngestOptions, PortfolioQueryInit, SubscribeFilter, SubscribeOptions } from "./client.js";
export { refuseNonStrings, toAmount, toOptionalAmount } from "./amounts.js";
export type { Amount, DecimalLike } from "./amounts.js";
export { Code, PortfolioError, ProtocolViolation, ResyncRequired, codeName, toPortfolioError } from "./errors.js";
export type { FieldViolation } from "./errors.js";
export { IngestIncomplete, IngestSession, MAX_BATCH_SIZE, encodeEvent, eventId } from "./ingest.js";
export type {
  Batch,
  CashTransferEvent,
  CommissionAmendmentEvent,
  ExecutionEvent,
  FillEvent,
  OrderStatusEvent,
  When,
} from "./ingest.js";
export { ResumeCursor } from "./resume.js";
export { Backoff, DEFAULT_TIMEOUT_MS, INGEST_RETRY_CODES, SUBSCRIBE_RESUME_CODES } from "./retry.js";
export * from "./gen/portfolio/v1/portfolio_pb.js";
export { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";
export type { BadRequest, BadRequest_FieldViolation } from "./gen/google/rpc/error_details_pb.js";
