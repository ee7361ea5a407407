"""One way for server interceptors to run code around an RPC's behavior, for all four arities."""
from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

import grpc

# around_unary(behavior, request, context) -> response; around_stream(...) -> response iterator.
AroundUnary = Callable[[Callable, Any, grpc.ServicerContext], Any]
AroundStream = Callable[[Callable, Any, grpc.ServicerContext], Iterator]
T = TypeVar("T")

_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def around(handler: grpc.RpcMethodHandler, unary: AroundUnary, stream: AroundStream) -> grpc.RpcMethodHandler:
    """`handler` with its behavior called through `unary` (unary responses) or `stream`
    (streamed responses)."""
    if handler.response_streaming:
        behavior = handler.unary_stream or handler.stream_stream

        def run(request, context):
            return stream(behavior, request, context)
    else:
        behavior = handler.unary_unary or handler.stream_unary

        def run(request, context):
            return unary(behavior, request, context)
    return _FACTORIES[(handler.request_streaming, handler.response_streaming)](
        run, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def bracketed(handler: grpc.RpcMethodHandler, begin: Callable[[], T],
              end: Callable[[T, grpc.ServicerContext, BaseException | None], None]) -> grpc.RpcMethodHandler:
    """`handler` with begin() run before its behavior and end(what begin returned, context, what
    the behavior raised or None) once the call is over, however it ends (a stream: its last
    message, or the client leaving)."""
    def unary(behavior, request, context):
        state, error = begin(), None
        try:
            return behavior(request, context)
        except BaseException as e:
            error = e
            raise
        finally:
            end(state, context, error)

    def stream(behavior, request, context):
        state, error = begin(), None
        try:
            yield from behavior(request, context)
        except BaseException as e:
            error = e
            raise
        finally:
            end(state, context, error)

    return around(handler, unary, stream)
