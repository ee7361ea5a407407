"""Page tokens (AIP-158): minted and read here only, by the API layer, never by a backend.

A token seals the position after the last item of a page together with a digest of the request's
filters, with Fernet (AES-CBC + HMAC-SHA256): clients can neither read nor forge it, and a token used
with other filters is refused. Every replica derives the same key from the shared secret.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken

from photostore.errors import invalid

TOKEN_TTL_S = 7 * 24 * 3600


class PageTokens:
    def __init__(self, secret: str):
        key = hashlib.sha256(b"photostore page tokens\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    @staticmethod
    def _digest(filters: dict) -> str:
        canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]

    def mint(self, position: list, filters: dict) -> str:
        """A token for the page after `position` (JSON-able values) of a request with `filters`."""
        body = json.dumps({"p": position, "f": self._digest(filters)}, separators=(",", ":"))
        return self._fernet.encrypt(body.encode()).decode()

    def read(self, token: str, filters: dict, field: str = "page_token") -> list:
        """The position sealed in `token`; INVALID_ARGUMENT when it is forged, expired or was
        minted for other filters."""
        try:
            body = json.loads(self._fernet.decrypt(token.encode(), ttl=TOKEN_TTL_S))
        except (InvalidToken, ValueError, TypeError):
            raise invalid("page_token is not valid (expired, or not from this service)",
                          field=field, reason="INVALID_PAGE_TOKEN") from None
        if body.get("f") != self._digest(filters):
            raise invalid("page_token was made for a request with other filters; send the same "
                          "filters as the first page", field=field, reason="PAGE_TOKEN_MISMATCH")
        return body["p"]


def page_size(value: int, default: int, maximum: int) -> int:
    """A request's page_size: 0 means `default`, more than `maximum` means `maximum`, negative is
    INVALID_ARGUMENT."""
    if value < 0:
        raise invalid("page_size must not be negative", field="page_size")
    return min(value or default, maximum)


def time_position(after: tuple[dt.datetime, str]) -> list:
    """A (sort_time, id) keyset position as JSON-able values."""
    return [after[0].timestamp(), after[1]]


def position_time(position: list) -> tuple[dt.datetime, str]:
    try:
        return dt.datetime.fromtimestamp(float(position[0]), dt.timezone.utc), str(position[1])
    except (TypeError, ValueError, IndexError, OverflowError):
        raise invalid("page_token is not valid", field="page_token",
                      reason="INVALID_PAGE_TOKEN") from None


def token_secret(settings) -> str:
    """PHOTOSTORE_TOKEN_SECRET, else one derived from the service key (shared by the replicas)."""
    if settings.token_secret:
        return settings.token_secret
    from photostore.auth import service_api_key
    return hashlib.sha256(b"page tokens\0" + service_api_key(settings).encode()).hexdigest()
