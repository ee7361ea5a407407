"""gRPC errors carrying a google.rpc.Status with details (grpcio-status)."""
from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "photos.v1"


class ServiceError(Exception):
    """Raised inside service code; turned into a rich gRPC status at the edge."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "",
                 field: str = "", metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or code.name
        self.field = field
        self.metadata = metadata or {}

    def to_status(self) -> grpc.Status:
        details = []
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        details.append(info)
        if self.code == grpc.StatusCode.INVALID_ARGUMENT:
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.message)]))
        elif self.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            details.append(error_details_pb2.QuotaFailure(violations=[
                error_details_pb2.QuotaFailure.Violation(subject=self.field or self.reason,
                                                         description=self.message)]))
        packed = []
        for d in details:
            a = any_pb2.Any()
            a.Pack(d)
            packed.append(a)
        return rpc_status.to_status(status_pb2.Status(
            code=getattr(code_pb2, self.code.name), message=self.message, details=packed))

    def abort(self, context: grpc.ServicerContext):
        context.abort_with_status(self.to_status())


def invalid(message: str, field: str = "", reason: str = "INVALID_ARGUMENT",
            metadata: dict[str, str] | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, field=field, reason=reason,
                        metadata=metadata)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message, reason="NOT_FOUND")


def failed_precondition(message: str, reason: str = "FAILED_PRECONDITION",
                        metadata: dict[str, str] | None = None) -> ServiceError:
    """The resource is not in the state the call needs (e.g. a photo not in the trash)."""
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message, reason=reason, metadata=metadata)


def too_large(message: str, field: str = "", reason: str = "TOO_LARGE",
              metadata: dict[str, str] | None = None) -> ServiceError:
    """A size or count over a limit; `metadata` carries the values the message names (AIP-193)."""
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, field=field, reason=reason,
                        metadata=metadata)


def storage_full(detail: str) -> ServiceError:
    """RESOURCE_EXHAUSTED for a full disk (HTTP 507 at the gateway): nothing was stored."""
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"the photo store is out of disk space; nothing was stored. Free space and "
                        f"try again ({detail})", field="storage", reason="STORAGE_FULL")


def unavailable(message: str, reason: str = "UNAVAILABLE") -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, reason=reason)


def status_details(err: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status of a failed call, or None when it carries none."""
    return rpc_status.from_call(err)  # type: ignore[arg-type]


def decode_details(status: status_pb2.Status) -> list[dict]:
    """Details as JSON-able dicts with '@type', as grpc-gateway renders them."""
    from google.protobuf import json_format
    out = []
    for any_msg in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                    error_details_pb2.QuotaFailure):
            if any_msg.Is(cls.DESCRIPTOR):
                msg = cls()
                any_msg.Unpack(msg)
                d = json_format.MessageToDict(msg)
                d["@type"] = any_msg.type_url
                out.append(d)
    return out
