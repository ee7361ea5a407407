"""API keys: `authorization: Bearer <key>` on every RPC but health and reflection."""
from __future__ import annotations

import contextvars
import hashlib
import os
import secrets
import threading
import time

import grpc

from photostore.backends.base import MetadataStore, User
from photostore.errors import ServiceError

KEY_PREFIX = "psk_"
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_current_user: contextvars.ContextVar[User | None] = contextvars.ContextVar("user", default=None)


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def current_user() -> User:
    """The authenticated caller of the RPC being served."""
    user = _current_user.get()
    if user is None:
        raise RuntimeError("no authenticated user in this context")
    return user


def bearer_metadata(api_key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {api_key}")]


def api_key_from_metadata(metadata) -> str | None:
    for k, v in metadata or ():
        if k == "authorization":
            scheme, _, token = v.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authenticator:
    """Looks keys up in the metadata store, caching hits for a short while."""

    def __init__(self, store: MetadataStore, ttl_s: float = 30.0):
        self._store = store
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, User]] = {}
        self._lock = threading.Lock()

    def user_for_key(self, key: str | None) -> User:
        if not key:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                               "missing API key: send metadata 'authorization: Bearer <key>'",
                               reason="API_KEY_MISSING")
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        user = self._store.user_by_key_hash(digest)
        if user is None:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "API key is not valid",
                               reason="API_KEY_INVALID")
        with self._lock:
            self._cache[digest] = (now + self._ttl, user)
        return user


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without a valid key; exposes the caller through current_user()."""

    def __init__(self, authenticator: Authenticator):
        self._auth = authenticator

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        auth = self._auth

        def authenticate(context) -> bool:
            try:
                _current_user.set(auth.user_for_key(api_key_from_metadata(context.invocation_metadata())))
                return True
            except ServiceError as e:
                e.abort(context)
                return False

        if handler.response_streaming:
            behavior = handler.unary_stream or handler.stream_stream

            def wrapped_stream(request, context):
                authenticate(context)
                yield from behavior(request, context)
            wrapped = wrapped_stream
        else:
            behavior = handler.unary_unary or handler.stream_unary

            def wrapped_unary(request, context):
                authenticate(context)
                return behavior(request, context)
            wrapped = wrapped_unary

        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(wrapped, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)


SERVICE_USER = "_service"


def service_api_key(settings, store: MetadataStore) -> str:
    """The key services use to call each other (embed worker -> EmbedService).

    PHOTOSTORE_SERVICE_API_KEY when set; else a key kept in data_dir/service.key, made on first use.
    """
    key = settings.service_api_key
    path = settings.data_dir / "service.key"
    if not key:
        if path.exists():
            key = path.read_text().strip()
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(new_api_key())
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)  # atomic: the first process to get here sets the key
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
            key = path.read_text().strip()
    if store.user_by_key_hash(hash_key(key)) is None:
        user = store.user_by_name(SERVICE_USER)
        if user is None:
            try:
                store.create_user(SERVICE_USER, hash_key(key))
            except ValueError:  # another process made it first
                store.add_api_key(store.user_by_name(SERVICE_USER).id, hash_key(key))
        else:
            store.add_api_key(user.id, hash_key(key))
    return key
