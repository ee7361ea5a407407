"""Storage backends behind small ports (see base.py), one backend chosen per port by the settings
(PHOTOSTORE_BLOBS__BACKEND, ..._METADATA__..., ..._EVENTS__..., ..._VECTORS__...). The embedded
family needs no servers; the others are the scale-out engines. Engine clients are imported only
by the processes that open them."""
from __future__ import annotations

from photostore.backends.base import BlobStore, EventLog, MetadataStore, UserStore, VectorStore
from photostore.settings import Settings


def open_blobs(settings: Settings) -> BlobStore:
    if settings.blobs.backend == "s3":
        from photostore.backends.s3_blobs import S3BlobStore
        return S3BlobStore(settings.blobs)
    from photostore.backends.local_blobs import LocalBlobStore
    return LocalBlobStore(settings.blobs_dir)


def open_metadata(settings: Settings) -> MetadataStore:
    if settings.metadata.backend == "mongodb":
        from photostore.backends.mongo_metadata import MongoMetadataStore
        return MongoMetadataStore(settings.metadata)
    from photostore.backends.sqlite_metadata import SqliteMetadataStore
    return SqliteMetadataStore(settings.metadata_path)


def open_users(settings: Settings) -> UserStore:
    """Users live beside the photo metadata, in the same engine."""
    if settings.metadata.backend == "mongodb":
        from photostore.backends.mongo_metadata import MongoUserStore
        return MongoUserStore(settings.metadata, session_idle_s=settings.session_idle_seconds,
                              session_max_age_s=settings.session_max_age_seconds)
    from photostore.backends.sqlite_users import SqliteUserStore
    return SqliteUserStore(settings.users_path, legacy_metadata_path=settings.metadata_path,
                           session_idle_s=settings.session_idle_seconds,
                           session_max_age_s=settings.session_max_age_seconds)


def open_events(settings: Settings) -> EventLog:
    if settings.events.backend == "kafka":
        from photostore.backends.kafka_events import KafkaEventLog
        log: EventLog = KafkaEventLog(settings.events)
    else:
        from photostore.backends.sqlite_events import SqliteEventLog
        log = SqliteEventLog(settings.events_path, settings.events)
    if settings.events.topic_prefix:
        from photostore.backends.prefixed_events import PrefixedEventLog
        log = PrefixedEventLog(log, settings.events.topic_prefix)
    return log


def open_vectors(settings: Settings) -> VectorStore:
    if settings.vectors.backend == "weaviate":
        from photostore.backends.weaviate_vectors import WeaviateVectorStore
        return WeaviateVectorStore(settings.vectors)
    from photostore.backends.sqlite_vectors import SqliteVectorStore
    return SqliteVectorStore(settings.vectors_path, exact_below=settings.vector_exact_below,
                             ef_search=settings.vector_ann_ef_search)
