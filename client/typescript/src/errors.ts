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

/**
 * A call the connection failed under, reported as gRPC reports it: UNAVAILABLE, which callers
 * retry or alert on. Connect for Node says INTERNAL when the client refuses the service's
 * certificate (not of a CA it trusts, or not for this host), and CANCELED when the service
 * closes the connection under the call, which is how a service wanting a client certificate
 * ends a TLS 1.3 handshake that sent none, or one not of its CA; grpc-core (the Python SDK) and
 * grpc-js say UNAVAILABLE for both. `asked`: the caller's signal or close() cancelled the call,
 * which stays CANCELED. `tls`: the target is https, so the message can say what to check.
 */
export function asConnectionFailure(error: PortfolioError, options: { asked: boolean; tls: boolean }): PortfolioError {
  const refusal = tlsRefusal(error);
  if (refusal !== undefined) {
    return new PortfolioError(Code.Unavailable, `TLS handshake failed: ${refusal.message}`, [], { cause: error });
  }
  if (error.code !== Code.Canceled || options.asked) return error;
  const hint = options.tls
    ? "; over TLS, a service that wants a client certificate closes the connection when none is given or it is not of the service's CA"
    : "";
  return new PortfolioError(Code.Unavailable, `the connection closed under the call (${error.rawMessage})${hint}`, [], { cause: error });
}

/** The TLS error (Node's or OpenSSL's) a failure comes from, if any. */
function tlsRefusal(error: Error): Error | undefined {
  const seen = new Set<unknown>();
  for (let reason: unknown = error; reason instanceof Error && !seen.has(reason); reason = reason.cause) {
    seen.add(reason);
    const code = (reason as { code?: unknown }).code;
    const library = (reason as { library?: unknown }).library;
    if ((typeof code === "string" && TLS_ERROR.test(code)) || library === "SSL routines") return reason;
  }
  return undefined;
}

/** Node's TLS codes (ERR_TLS_CERT_ALTNAME_INVALID), OpenSSL's (ERR_SSL_...), and X.509
 * verification's (UNABLE_TO_VERIFY_LEAF_SIGNATURE, DEPTH_ZERO_SELF_SIGNED_CERT, CERT_HAS_EXPIRED). */
const TLS_ERROR = /^(ERR_TLS_|ERR_SSL_|ERR_OSSL_)|CERT|^UNABLE_TO_/;

/** The code's canonical gRPC name, e.g. INVALID_ARGUMENT. */
export function codeName(code: Code): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}
