"""Browser sessions, as the gateway sees them: a cookie holding a session token, nothing stored here.

POST /api/v1/session trades an API key for a session with the ingest service
(photos.v1.AuthService/CreateSession), which keeps it in its UserStore beside the users and their
keys (only the token's sha256). The HttpOnly cookie carries the token; the gateway sends it on as
`authorization: Bearer <token>` to every service, which accepts it as its user while the session
lives. Any gateway process or replica can therefore serve any request of a signed-in browser.
Signing out (DeleteSession with the token) ends it for every gateway and service; signing in again
deletes the old session first. Lifetimes: settings.session_idle_seconds / session_max_age_seconds.
"""
from __future__ import annotations

import datetime as dt

import grpc

from photos.v1 import auth_pb2, auth_pb2_grpc
from photostore.auth import bearer_metadata, is_session_token
from photostore.errors import ServiceError

COOKIE = "photostore_session"


def cookie_token(cookies) -> str:
    """The session token of the request's cookie; "" when there is no cookie. A cookie that holds
    no session token (from before sessions moved to the ingest service, or made up) is refused."""
    token = cookies.get(COOKIE, "")
    if token and not is_session_token(token):
        raise ServiceError(grpc.StatusCode.UNAUTHENTICATED,
                           "the session has expired or was signed out: sign in again with POST /api/v1/session",
                           reason="SESSION_INVALID")
    return token


def create(auth: auth_pb2_grpc.AuthServiceStub, api_key: str, timeout: float) -> auth_pb2.CreateSessionResponse:
    """A new session of the key's user (the service's UNAUTHENTICATED error for a wrong key)."""
    return auth.CreateSession(auth_pb2.CreateSessionRequest(), metadata=bearer_metadata(api_key),
                              timeout=timeout)


def resolve(auth: auth_pb2_grpc.AuthServiceStub, token: str, timeout: float) -> auth_pb2.GetCallerResponse:
    """The session's user and expiry; SESSION_INVALID (401) when it has ended."""
    return auth.GetCaller(auth_pb2.GetCallerRequest(), metadata=bearer_metadata(token), timeout=timeout)


def end(auth: auth_pb2_grpc.AuthServiceStub, token: str, timeout: float) -> None:
    """Deletes the session; one that has ended already is no error."""
    try:
        auth.DeleteSession(auth_pb2.DeleteSessionRequest(), metadata=bearer_metadata(token), timeout=timeout)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise


def as_json(user_id: str, display_name: str, expire_time) -> dict:
    """The Session schema of the OpenAPI document (the token itself is only in the cookie)."""
    expires = expire_time.ToDatetime(tzinfo=dt.timezone.utc)
    return {"userId": user_id, "displayName": display_name,
            "expireTime": expires.isoformat(timespec="seconds").replace("+00:00", "Z")}
