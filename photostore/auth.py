"""API keys: `authorization: Bearer <key>` on every RPC but health and reflection.

The ingest service owns users, keys and browser sessions (the UserStore) and checks them itself;
search and embed ask it through photos.v1.AuthService/GetCaller and cache the answer for
auth_cache_seconds, so no other service holds database credentials (docs/ARCHITECTURE.md,
"Authentication"). A session token (SESSION_PREFIX, from AuthService/CreateSession) is a bearer
credential of its user like a key; the ingest service checks it on every call, uncached.
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
SESSION_PREFIX = "pss_"
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_current_user: contextvars.ContextVar[User | None] = contextvars.ContextVar("user", default=None)


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(24)


def new_session_token() -> str:
    return SESSION_PREFIX + secrets.token_urlsafe(32)


def is_session_token(credential: str | None) -> bool:
    return bool(credential) and credential.startswith(SESSION_PREFIX)


def hash_key(key: str) -> str:
    """sha256 of a key or session token: what the UserStore keeps."""
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
    """Finds the user of a key through `lookup` (key -> user, or None), caching answers: hits for
    ttl_s, misses for NEGATIVE_CACHE_S; session tokens too unless cache_sessions is False."""

    def __init__(self, lookup: KeyLookup, ttl_s: float = 30.0, *, cache_sessions: bool = True):
        self._lookup = lookup
        self._ttl = ttl_s
        self._cache_sessions = cache_sessions
        self._cache: dict[str, tuple[float, User | None]] = {}
        self._lock = threading.Lock()

    @classmethod
    def local(cls, users: UserStore, ttl_s: float = 30.0) -> Authenticator:
        """Checks keys and session tokens against the users store (the ingest service). Sessions
        are looked up on every call: sign-out and expiry hold at once on every ingest replica."""

        def lookup(key: str) -> User | None:
            if is_session_token(key):
                session = users.session_by_token_hash(hash_key(key))
                return session.user if session else None
            return users.user_by_key_hash(hash_key(key))

        return cls(lookup, ttl_s, cache_sessions=False)

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
        session = is_session_token(key)
        if session and not self._cache_sessions:
            user = self._lookup(key)
        else:
            user = self._cached_lookup(key)
        if user is None and session:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                               "the session has expired or was signed out: sign in again",
                               reason="SESSION_INVALID")
        if user is None:
            raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, "API key is not valid",
                               reason="API_KEY_INVALID")
        return user

    def _cached_lookup(self, key: str) -> User | None:
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        user = self._lookup(key)
        with self._lock:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[digest] = (now + (self._ttl if user else NEGATIVE_CACHE_S), user)
        return user


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """photos.v1.AuthService on the ingest service: the interceptor has checked the credential
    already. Sessions are kept in `users` as the sha256 of their token."""

    def __init__(self, users: UserStore):
        self._users = users

    def GetCaller(self, request, context):
        user = current_user()
        response = auth_pb2.GetCallerResponse(user_id=user.id, display_name=user.name)
        credential = api_key_from_metadata(context.invocation_metadata())
        if is_session_token(credential):
            session = self._users.session_by_token_hash(hash_key(credential))
            if session is None:  # it ended since the interceptor looked
                ServiceError(grpc.StatusCode.UNAUTHENTICATED, "the session has expired or was signed out",
                             reason="SESSION_INVALID").abort(context)
            response.session_expire_time.FromDatetime(session.expire_time)
        return response

    def CreateSession(self, request, context):
        user = current_user()
        credential = api_key_from_metadata(context.invocation_metadata())
        if is_session_token(credential):
            ServiceError(grpc.StatusCode.PERMISSION_DENIED,
                         "a session is made with an API key, not with another session",
                         reason="API_KEY_REQUIRED").abort(context)
        if user.name == SERVICE_USER:
            ServiceError(grpc.StatusCode.PERMISSION_DENIED, "the services' own key has no sessions",
                         reason="INTERNAL_CALLER").abort(context)
        if self._users.user_by_key_hash(hash_key(credential)) is None:
            # Asked uncached: a key revoked (`users key`) but still in the key cache signs no one in.
            ServiceError(grpc.StatusCode.UNAUTHENTICATED, "API key is not valid",
                         reason="API_KEY_INVALID").abort(context)
        token = new_session_token()
        session = self._users.create_session(user.id, hash_key(token))
        response = auth_pb2.CreateSessionResponse(token=token, user_id=user.id, display_name=user.name)
        response.expire_time.FromDatetime(session.expire_time)
        return response

    def DeleteSession(self, request, context):
        credential = api_key_from_metadata(context.invocation_metadata())
        if not is_session_token(credential):
            ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                         "DeleteSession ends the session whose token is the call's bearer credential; "
                         "this call was made with an API key", reason="SESSION_TOKEN_REQUIRED").abort(context)
        self._users.delete_session(hash_key(credential))
        return auth_pb2.DeleteSessionResponse()


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
