"""Storage backends behind small interfaces (see base.py); the embedded family needs no servers."""
from __future__ import annotations

from photostore.backends.base import BlobStore, EventLog, MetadataStore, VectorStore
from photostore.settings import Settings


def _require_embedded(settings: Settings) -> None:
    if settings.backend != "embedded":
        raise ValueError(f"unknown backend {settings.backend!r}; this build ships 'embedded'")


def open_blobs(settings: Settings) -> BlobStore:
    _require_embedded(settings)
    from photostore.backends.local_blobs import LocalBlobStore
    return LocalBlobStore(settings.blobs_dir)


def open_metadata(settings: Settings) -> MetadataStore:
    _require_embedded(settings)
    from photostore.backends.sqlite_metadata import SqliteMetadataStore
    return SqliteMetadataStore(settings.metadata_path)


def open_events(settings: Settings) -> EventLog:
    _require_embedded(settings)
    from photostore.backends.sqlite_events import SqliteEventLog
    return SqliteEventLog(settings.events_path)


def open_vectors(settings: Settings) -> VectorStore:
    _require_embedded(settings)
    from photostore.backends.sqlite_vectors import SqliteVectorStore
    return SqliteVectorStore(settings.vectors_path)
