/**
 * What a failed call raises: the gRPC status code, the service's message, and the
 * `google.rpc.BadRequest` field violations decoded from `grpc-status-details-bin`, so a caller
 * can say which field was wrong without parsing text.
 */

import { Code, ConnectError } from "@connectrpc/connect";

import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

export { Code };

export interface FieldViolation {
  /** The field's path in the request, as the service names it (snake_case, e.g. "account_id"). */
  readonly field: string;
  readonly description: string;
}

/** A call that ended with a gRPC status other than OK. */
export class PortfolioError extends Error {
  override name = "PortfolioError";
  /** The status code, e.g. `Code.InvalidArgument`. */
  readonly code: Code;
  /** The status message as the service wrote it (no code prefix). */
  readonly rawMessage: string;
  readonly fieldViolations: readonly FieldViolation[];

  constructor(code: Code, message: string, fieldViolations: readonly FieldViolation[] = [], options?: { cause?: unknown }) {
    super(`[${codeName(code)}] ${message}`, options);
    this.code = code;
    this.rawMessage = message;
    this.fieldViolations = fieldViolations;
  }
}

/**
 * A subscription asked for a sequence older than the service's replay buffer (OUT_OF_RANGE):
 * re-read state, then subscribe from the sequence it was read at, plus one.
 */
export class ResyncRequired extends PortfolioError {
  override name = "ResyncRequired";
}

/** The service answered in a way the protocol does not allow (a bug on one side). */
export class ProtocolViolation extends Error {
  override name = "ProtocolViolation";
}

/** The SDK's error for anything a call threw. Leaves PortfolioError and TypeError as they are. */
export function toPortfolioError(reason: unknown, options: { subscription?: boolean } = {}): unknown {
  if (reason instanceof PortfolioError || reason instanceof TypeError || reason instanceof ProtocolViolation) {
    return reason;
  }
  const error = ConnectError.from(reason);
  const violations = error
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  const kind = options.subscription && error.code === Code.OutOfRange ? ResyncRequired : PortfolioError;
  return new kind(error.code, error.rawMessage, violations, { cause: error });
}

/** The code's canonical gRPC name, e.g. INVALID_ARGUMENT. */
export function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
