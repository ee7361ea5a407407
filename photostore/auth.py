"""API keys: `authorization: Bearer <key>` on every RPC but health and reflection.

The ingest service owns users and keys (the UserStore) and checks keys itself; search and embed ask
it through photos.v1.AuthService/GetCaller and cache the answer for auth_cache_seconds, so no other
service holds database credentials (docs/ARCHITECTURE.md, "Authentication").
"""
from __future__ import annotations

import contextvars
import logging
import hashlib
import os
import secrets
import threading
import time

from typing import Callable

import grpc

from photos.v1 import auth_pb2, auth_pb2_grpc

from photostore.backends.base import BackendUnavailableError, StorageFullError, User, UserStore
from photostore.errors import ServiceError, storage_full, unavailable
from photostore.interceptors import around

log = logging.getLogger(__name__)

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


KeyLookup = Callable[[str], "User | None"]
# A key found invalid is not asked about again for this long.
NEGATIVE_CACHE_S = 2.0
CACHE_LIMIT = 10_000


class Authenticator:
    """Finds the user of a key through `lookup` (its hash -> user, or None), caching answers:
    hits for ttl_s, misses for NEGATIVE_CACHE_S."""

    def __init__(self, lookup: KeyLookup, ttl_s: float = 30.0):
        self._lookup = lookup
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def local(cls, users: UserStore, ttl_s: float = 30.0) -> Authenticator:
        """Checks keys against the users store (the ingest service)."""
        return cls(lambda key: users.user_by_key_hash(hash_key(key)), ttl_s)

    @classmethod
    def remote(cls, channel: grpc.Channel, ttl_s: float = 30.0) -> Authenticator:
        """Checks keys by asking the ingest service's AuthService (search, embed)."""
        stub = auth_pb2_grpc.AuthServiceStub(channel)

        def lookup(key: str) -> User | None:
            try:
                caller = stub.GetCaller(auth_pb2.GetCallerRequest(), metadata=bearer_metadata(key),
                                        timeout=AUTH_TIMEOUT_S)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED:
                    return None
                raise unavailable(f"cannot check the API key: the ingest service answered "
                                  f"{e.code().name}: {e.details()}", reason="AUTH_UNAVAILABLE") from e
            return User(id=caller.user_id, name=caller.display_name, created_at=None)

        return cls(lookup, ttl_s)

    def user_for_key(self, key: str | None) -> User:
        if not key:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                               "missing API key: send metadata 'authorization: Bearer <key>'",
                               reason="API_KEY_MISSING")
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            user = hit[1]
        else:
            user = self._lookup(key)
            with self._lock:
                if len(self._cache) >= CACHE_LIMIT:
                    self._cache.clear()
                self._cache[digest] = (now + (self._ttl if user else NEGATIVE_CACHE_S), user)
        if user is None:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "API key is not valid",
                               reason="API_KEY_INVALID")
        return user


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """photos.v1.AuthService on the ingest service: the interceptor has checked the key already."""

    def GetCaller(self, request, context):
        user = current_user()
        return auth_pb2.GetCallerResponse(user_id=user.id, display_name=user.name)


def engine_unavailable(error: BackendUnavailableError) -> ServiceError:
    """UNAVAILABLE with the engine's own words, for an engine that is down or timed out;
    RESOURCE_EXHAUSTED (STORAGE_FULL) for one whose disk is full."""
    if isinstance(error, StorageFullError):
        log.error("answering STORAGE_FULL: %s", error)
        return storage_full(str(error))
    log.warning("answering UNAVAILABLE: %s", error)
    return unavailable(f"a storage engine is unavailable, try again shortly: {error}",
                       reason="ENGINE_UNAVAILABLE")


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without a valid key; exposes the caller through current_user()."""

    def __init__(self, authenticator: Authenticator):
        self._auth = authenticator

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        auth = self._auth

        def authenticate(context) -> None:
            try:
                _current_user.set(auth.user_for_key(api_key_from_metadata(context.invocation_metadata())))
            except ServiceError as e:
                e.abort(context)

        def unary(behavior, request, context):
            authenticate(context)
            try:
                return behavior(request, context)
            except BackendUnavailableError as e:
                engine_unavailable(e).abort(context)

        def stream(behavior, request, context):
            authenticate(context)
            try:
                yield from behavior(request, context)
            except BackendUnavailableError as e:
                engine_unavailable(e).abort(context)

        return around(handler, unary, stream)


SERVICE_USER = "_service"
AUTH_TIMEOUT_S = 10.0


def require_service_caller(method: str) -> None:
    """PERMISSION_DENIED unless the services' own key makes this call (internal methods)."""
    if current_user().name != SERVICE_USER:
        raise ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                           f"{method} is internal to the services; search with SearchService",
                           reason="INTERNAL_METHOD", metadata={"method": method})


def service_api_key(settings) -> str:
    """The key services use to call each other (embed worker -> EmbedService).

    PHOTOSTORE_SERVICE_API_KEY when set (a Secret shared by every replica); else a key kept in
    data_dir/service.key, made on first use (one machine). The ingest service registers it.
    """
    if settings.service_api_key:
        return settings.service_api_key
    path = settings.data_dir / "service.key"
    if not path.exists():
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
    return path.read_text().strip()


def register_service_key(settings, users: UserStore) -> str:
    """Makes the service key valid in the users store (the ingest service, at start-up)."""
    key = service_api_key(settings)
    if users.user_by_key_hash(hash_key(key)) is None:
        user = users.user_by_name(SERVICE_USER)
        if user is None:
            try:
                users.create_user(SERVICE_USER, hash_key(key))
            except ValueError:  # another replica made it first
                users.add_api_key(users.user_by_name(SERVICE_USER).id, hash_key(key))
        else:
            users.add_api_key(user.id, hash_key(key))
    return key
