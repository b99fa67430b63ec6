"""Canonical gRPC errors with `google.rpc` details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.wire import FieldViolation


class ApiError(Exception):
    """An RPC that fails with a status code; `violations` become a `google.rpc.BadRequest`."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        violations: list[FieldViolation] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = violations or []

    @classmethod
    def invalid(cls, violation: FieldViolation) -> ApiError:
        return cls(grpc.StatusCode.INVALID_ARGUMENT, str(violation), [violation])

    @classmethod
    def precondition(cls, field: str, reason: str) -> ApiError:
        """The state does not allow the request now; the field and figures say why."""
        violation = FieldViolation(field, reason)
        return cls(grpc.StatusCode.FAILED_PRECONDITION, str(violation), [violation])

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=getattr(code_pb2, self.code.name), message=self.message)
        if self.violations:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=violation.field, description=violation.description
                        )
                        for violation in self.violations
                    ]
                )
            )
            status.details.append(detail)
        converted: grpc.Status = rpc_status.to_status(status)
        return converted
