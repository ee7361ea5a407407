"""gRPC status -> HTTP response, shaped like grpc-gateway's errors (a JSON google.rpc.Status)."""
from __future__ import annotations

import grpc
from flask import Response, jsonify
from google.rpc import status_pb2
from grpc_status import rpc_status
from werkzeug.exceptions import HTTPException

from photostore.errors import ServiceError, decode_details, status_details

# runtime.HTTPStatusFromCode in grpc-gateway.
HTTP_STATUS_FROM_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# gRPC code reported for errors raised by the HTTP layer itself (routing, body size).
CODE_FROM_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

# Where an ErrorInfo reason says more than the code: (code, reason) -> HTTP status.
# STORAGE_FULL: the photo store's disk or bucket is full; 507 Insufficient Storage, not a 429
# that a client would retry after a pause.
HTTP_STATUS_FROM_REASON: dict[tuple[grpc.StatusCode, str], int] = {
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "STORAGE_FULL"): 507,
}


def http_status(code: grpc.StatusCode, details: list[dict] | None = None) -> int:
    """grpc-gateway's status for the code, unless an ErrorInfo reason maps to a more precise one."""
    for detail in details or ():
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            status = HTTP_STATUS_FROM_REASON.get((code, detail.get("reason", "")))
            if status:
                return status
    return HTTP_STATUS_FROM_CODE.get(code, 500)


def status_json(code: grpc.StatusCode, message: str, details: list[dict] | None = None) -> dict:
    return {"code": code.value[0], "message": message, "details": details or []}


def rpc_error_json(err: grpc.RpcError) -> tuple[dict, int]:
    """The JSON Status of a failed call and its HTTP status."""
    code = err.code()
    try:
        rich = status_details(err)
    except ValueError:  # trailer disagrees with the call's status: trust the call
        rich = None
    details = decode_details(rich) if rich is not None else []
    return status_json(code, err.details() or "", details), http_status(code, details)


def service_error_json(err: ServiceError) -> tuple[dict, int]:
    """Renders an error raised in the gateway exactly as a service would send it."""
    trailers = dict(err.to_status().trailing_metadata)
    rich = status_pb2.Status.FromString(trailers[rpc_status.GRPC_DETAILS_METADATA_KEY])
    details = decode_details(rich)
    return status_json(err.code, err.message, details), http_status(err.code, details)


def status_response(body: dict, status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="photostore"'
    return response


def handle_rpc_error(err: grpc.RpcError) -> Response:
    return status_response(*rpc_error_json(err))


def handle_service_error(err: ServiceError) -> Response:
    return status_response(*service_error_json(err))


def handle_http_exception(exc: HTTPException) -> Response:
    """Flask's own 404/405/413... in the Status shape; keeps headers such as Allow."""
    status = exc.code or 500
    code = CODE_FROM_HTTP_STATUS.get(status, grpc.StatusCode.UNKNOWN)
    reason = (exc.name or "error").upper().replace(" ", "_")
    body, _ = service_error_json(ServiceError(code, exc.description or exc.name, reason=reason))
    response = status_response(body, status)
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
