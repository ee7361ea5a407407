"""The search index on Weaviate: one object per photo, one named vector per space.

Layout: one collection (settings.weaviate_collection) whose objects carry a self-provided, HNSW,
cosine named vector per space ("clip", "text"), the model id of each (`clip_model`, `text_model`),
the filter properties (owner, taken_at, lower-cased camera make and model) and the keyword text
(word-tokenised for BM25). An object's id is a uuid5 of the photo id, so every writer agrees on it.

Owners are kept apart by a filter on `owner`, not by multi-tenancy: owners are many and small,
every query is filtered by owner anyway, and Weaviate serves such filters from its inverted index
(below its flat-search cut-off a filtered vector query is even an exact scan of the owner's few
vectors). A tenant per user would add a shard (its own HNSW graph, LSM stores and files) per user,
with the memory, file handles and schema traffic that costs, for nothing the filter does not give.

A vector keeps its model id, and a search asks for one model: while a reindex to a new model runs,
the photos not yet reindexed stay searchable under the old model id (same dimension: a named
vector's HNSW index takes one dimension only).

Every engine failure leaves as IndexUnavailableError (not reachable, timed out: retry later) or as
RuntimeError (the request was refused); no weaviate type escapes. After a failure to reach the
engine the client is dropped and the next call connects again.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
import uuid
from typing import Any, Iterator, Sequence

import numpy as np

from photostore.backends.base import (SPACE_CLIP, SPACE_TEXT, WORD, IndexUnavailableError, VectorFilter,
                                      VectorObject, VectorStore, words)
from photostore.settings import VectorsSettings

log = logging.getLogger(__name__)

SPACES = (SPACE_CLIP, SPACE_TEXT)
PHOTO_NAMESPACE = uuid.UUID("6f1d7c8e-2b1a-5c3e-9a47-0c9e1f2d3b4a")
CHUNK = 200  # objects per fetch and per batch insert
_TRANSIENT_MARKERS = ("unavailable", "deadline_exceeded", "deadline exceeded", "resource_exhausted",
                      "connection refused", "failed to connect", "connecterror", "connection reset",
                      "timed out", "timeout", "not ready", "shutting down", "socket closed",
                      "non-existing index")


NOT_LOADED = "non-existing index"  # the engine's answer while a new collection's index loads
SHARDS_DEADLINE_S = 30
GRPC_RETRIES = 3  # retries of a gRPC call that found the engine UNAVAILABLE: 0.25 + 0.5 + 1 s


def _bound_client_retries() -> None:
    """weaviate-client retries a gRPC call that finds the engine UNAVAILABLE for about a minute
    (backoff 1, 2, ... 32 s) and has no setting for it: a search would hang that long on a stopped
    engine. Its retry helper (weaviate.connect.v4._Retry, 4.24) is swapped for one that gives up
    after GRPC_RETRIES short retries; our callers retry later on IndexUnavailableError."""
    import grpc
    from weaviate import retry
    from weaviate.connect import v4
    from weaviate.exceptions import WeaviateRetryError

    if not hasattr(v4, "_Retry") or getattr(v4._Retry, "bounded", False):
        return

    class BoundedRetry(retry._Retry):
        bounded = True

        def with_exponential_backoff(self, count, error, f, *args, **kwargs):
            try:
                return f(*args, **kwargs)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                if count >= GRPC_RETRIES:
                    raise WeaviateRetryError(str(e), count) from e
                time.sleep(0.25 * 2 ** count)
                return self.with_exponential_backoff(count + 1, error, f, *args, **kwargs)

    v4._Retry = BoundedRetry


def object_id(photo_id: str) -> str:
    return str(uuid.uuid5(PHOTO_NAMESPACE, photo_id))


def keyword_text(text: str) -> str:
    """The keyword text as stored: its words (base.words), so the engine's word tokenizer and
    `words` agree on every token."""
    return " ".join(WORD.findall(text.lower()))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def _chunks(items: Sequence, size: int = CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class WeaviateVectorStore(VectorStore):
    def __init__(self, settings: VectorsSettings):
        self._settings = settings
        self._name = settings.weaviate_collection
        self._address = f"{settings.weaviate_host}:{settings.weaviate_http_port}/{settings.weaviate_grpc_port}"
        self._lock = threading.Lock()
        self._client: Any = None
        self._collection_ready = False
        self._space_of_model: dict[str, str] = {}

    # Connection

    def _connect(self) -> Any:
        import weaviate
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        _bound_client_retries()
        s = self._settings
        api_key = s.weaviate_api_key.get_secret_value()
        return weaviate.connect_to_custom(
            http_host=s.weaviate_host, http_port=s.weaviate_http_port, http_secure=s.weaviate_secure,
            grpc_host=s.weaviate_host, grpc_port=s.weaviate_grpc_port, grpc_secure=s.weaviate_secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=10, query=30, insert=60)))

    def _collection(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            if not self._collection_ready:
                self._create_collection(self._client)
                self._collection_ready = True
            return self._client.collections.use(self._name)

    def _create_collection(self, client: Any) -> None:
        """Creates the collection unless it exists (another process creating it too is fine), then
        waits until it answers."""
        if not client.collections.exists(self._name):
            self._create(client)
        self._await_shards(client)

    def _create(self, client: Any) -> None:
        from weaviate.classes.config import (Configure, DataType, Property, StopwordsPreset, Tokenization,
                                             VectorDistances)
        from weaviate.exceptions import UnexpectedStatusCodeError

        def text(name: str, tokenization=Tokenization.FIELD, searchable=False, filterable=True) -> Property:
            return Property(name=name, data_type=DataType.TEXT, tokenization=tokenization,
                            index_searchable=searchable, index_filterable=filterable)

        try:
            client.collections.create(
                self._name,
                vector_config=[Configure.Vectors.self_provided(
                    name=space,
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE))
                    for space in SPACES],
                # Every term counts: a query for "the" or "it" must find photos with those words.
                inverted_index_config=Configure.inverted_index(stopwords_preset=StopwordsPreset.NONE),
                properties=[
                    text("photo_id"),
                    text("owner"),
                    Property(name="taken_at", data_type=DataType.DATE, index_filterable=True,
                             index_range_filters=True),
                    text("camera_make"),
                    text("camera_model"),
                    *(text(f"{space}_model") for space in SPACES),
                    text("keywords", Tokenization.WORD, searchable=True, filterable=False),
                ])
            log.info("created weaviate collection %s at %s", self._name, self._address)
        except UnexpectedStatusCodeError:
            if not client.collections.exists(self._name):  # not the race with another creator
                raise

    def _await_shards(self, client: Any) -> None:
        """Waits until the collection answers queries: its schema is visible a moment before its
        index is loaded ("tried to browse non-existing index"), e.g. just after another process
        created it."""
        deadline = time.monotonic() + SHARDS_DEADLINE_S
        while True:
            try:
                client.collections.use(self._name).aggregate.over_all(total_count=True)
                return
            except Exception as e:
                if NOT_LOADED not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _drop_client(self, client: Any) -> None:
        with self._lock:
            if self._client is not client:
                return
            self._client = None
        with contextlib.suppress(Exception):
            client.close()

    @contextlib.contextmanager
    def _engine(self, action: str):
        """Turns the engine's and its client's exceptions into IndexUnavailableError / RuntimeError."""
        from weaviate.exceptions import WeaviateBaseError

        client = self._client
        try:
            yield
        except (WeaviateBaseError, OSError, ConnectionError, TimeoutError) as e:
            raise self._failure(action, e, client) from e
        except Exception as e:  # httpx and grpc errors the client lets through
            if type(e).__module__.split(".")[0] in ("httpx", "httpcore", "grpc"):
                raise self._failure(action, e, client) from e
            raise

    def _failure(self, action: str, e: Exception, client: Any) -> Exception:
        from weaviate.exceptions import (UnexpectedStatusCodeError, WeaviateClosedClientError,
                                         WeaviateConnectionError, WeaviateGRPCUnavailableError,
                                         WeaviateRetryError, WeaviateStartUpError, WeaviateTimeoutError)

        transient = isinstance(e, (WeaviateConnectionError, WeaviateGRPCUnavailableError, WeaviateStartUpError,
                                   WeaviateTimeoutError, WeaviateClosedClientError, WeaviateRetryError, OSError,
                                   ConnectionError, TimeoutError))
        if isinstance(e, UnexpectedStatusCodeError):
            transient = e.status_code >= 500 or e.status_code == 429
        elif not transient:
            message = str(e).lower()
            transient = any(marker in message for marker in _TRANSIENT_MARKERS) or \
                type(e).__module__.split(".")[0] in ("httpx", "httpcore")
        detail = " ".join(str(e).split())[:500]
        if transient:
            self._drop_client(client if client is not None else self._client)
            return IndexUnavailableError(f"weaviate at {self._address} is unavailable ({action}): {detail}")
        return RuntimeError(f"weaviate at {self._address} refused {action}: {detail}")

    # Writes

    def upsert_many(self, objs: Sequence[VectorObject]) -> None:
        groups: dict[str, list[VectorObject]] = {}
        for obj in objs:
            if obj.space not in SPACES:
                raise ValueError(f"unknown vector space {obj.space!r}")
            groups.setdefault(obj.photo_id, []).append(obj)
        for photo_ids in _chunks(list(groups)):
            self._upsert_chunk(photo_ids, groups)

    def _upsert_chunk(self, photo_ids: Sequence[str], groups: dict[str, list[VectorObject]]) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.classes.query import Filter

        with self._engine("an upsert"):
            collection = self._collection()
            held = collection.query.fetch_objects(
                filters=Filter.by_id().contains_any([object_id(p) for p in photo_ids]),
                include_vector=True, limit=len(photo_ids)).objects
            held_by_id = {str(o.uuid): o for o in held}
            batch = []
            for photo_id in photo_ids:
                properties, vectors = self._merged(groups[photo_id], held_by_id.get(object_id(photo_id)))
                batch.append(DataObject(properties=properties, uuid=object_id(photo_id), vector=vectors or None))
            result = collection.data.insert_many(batch)
        if result.has_errors:
            failed = sorted(result.errors.items())
            detail = "; ".join(f"{photo_ids[i]}: {err.message}" for i, err in failed[:3])
            message = f"weaviate at {self._address} failed {len(failed)} of {len(batch)} objects: {detail}"
            if any(marker in err.message.lower() for _, err in failed for marker in _TRANSIENT_MARKERS):
                raise IndexUnavailableError(message)
            raise RuntimeError(message)

    @staticmethod
    def _merged(group: list[VectorObject], held: Any) -> tuple[dict, dict]:
        """The photo's properties and named vectors: what it holds, with this group's writes on top."""
        properties = {k: v for k, v in (held.properties if held else {}).items() if v is not None}
        vectors = {k: v for k, v in ((held.vector or {}) if held else {}).items()
                   if k in SPACES and v is not None and len(v)}
        for obj in group:
            if obj.keywords is not None:
                properties["keywords"] = keyword_text(obj.keywords)
            if obj.vector is not None:
                vectors[obj.space] = np.asarray(obj.vector, np.float32).reshape(-1).tolist()
                properties[f"{obj.space}_model"] = obj.model
        last = group[-1]
        properties.update(photo_id=last.photo_id, owner=last.owner, camera_make=last.camera_make.lower(),
                          camera_model=last.camera_model.lower())
        if last.taken_at is None:
            properties.pop("taken_at", None)
        else:
            properties["taken_at"] = _utc(last.taken_at)
        return properties, vectors

    def delete(self, photo_id: str) -> None:
        with self._engine("a delete"):
            self._collection().data.delete_by_id(object_id(photo_id))

    # Reads

    @staticmethod
    def _object(o: Any, space: str) -> VectorObject | None:
        vector = (o.vector or {}).get(space)
        if not vector:
            return None
        p = o.properties
        return VectorObject(
            photo_id=p["photo_id"], owner=p["owner"], model=p.get(f"{space}_model") or "",
            vector=np.asarray(vector, np.float32), taken_at=_utc(p.get("taken_at")),
            camera_make=p.get("camera_make") or "", camera_model=p.get("camera_model") or "",
            space=space, keywords=p.get("keywords"))

    def get(self, photo_id: str, space: str = SPACE_CLIP) -> VectorObject | None:
        return self.get_many([photo_id], space).get(photo_id)

    def get_many(self, photo_ids: Sequence[str], space: str = SPACE_CLIP) -> dict[str, VectorObject]:
        from weaviate.classes.query import Filter

        if space not in SPACES:
            return {}
        found: dict[str, VectorObject] = {}
        for chunk in _chunks(list(dict.fromkeys(photo_ids))):
            with self._engine("a fetch"):
                objects = self._collection().query.fetch_objects(
                    filters=Filter.by_id().contains_any([object_id(p) for p in chunk]),
                    include_vector=[space], limit=len(chunk)).objects
            for o in objects:
                if (obj := self._object(o, space)) is not None:
                    found[obj.photo_id] = obj
        return found

    def _filter(self, flt: VectorFilter) -> Any:
        from weaviate.classes.query import Filter

        parts = [Filter.by_property("owner").equal(flt.owner)]
        if flt.start is not None:
            parts.append(Filter.by_property("taken_at").greater_or_equal(_utc(flt.start)))
        if flt.end is not None:
            parts.append(Filter.by_property("taken_at").less_than(_utc(flt.end)))
        if flt.camera_make:
            parts.append(Filter.by_property("camera_make").equal(flt.camera_make.lower()))
        if flt.camera_model:
            parts.append(Filter.by_property("camera_model").equal(flt.camera_model.lower()))
        return Filter.all_of(parts)

    def _space_of(self, collection: Any, model: str) -> str | None:
        """The space whose vectors carry this model id (remembered once seen), else None."""
        from weaviate.classes.query import Filter

        if model in self._space_of_model:
            return self._space_of_model[model]
        for space in SPACES:
            hit = collection.query.fetch_objects(filters=Filter.by_property(f"{space}_model").equal(model),
                                                 limit=1, return_properties=[])
            if hit.objects:
                self._space_of_model[model] = space
                return space
        return None

    def search(self, vector: Any, model: str, flt: VectorFilter, limit: int, min_score: float = -1.0
               ) -> list[tuple[str, float]]:
        from weaviate.classes.query import Filter, MetadataQuery

        if limit <= 0:
            return []
        query = np.asarray(vector, np.float32).reshape(-1).tolist()
        with self._engine("a search"):
            collection = self._collection()
            space = self._space_of(collection, model)
            if space is None:
                return []
            result = collection.query.near_vector(
                near_vector=query, target_vector=space, limit=limit,
                filters=Filter.all_of([self._filter(flt), Filter.by_property(f"{space}_model").equal(model)]),
                distance=1.0 - min_score if min_score > -1.0 else None,
                return_metadata=MetadataQuery(distance=True), return_properties=["photo_id"])
        hits = [(o.properties["photo_id"], 1.0 - float(o.metadata.distance)) for o in result.objects]
        hits = [hit for hit in hits if hit[1] >= min_score]
        hits.sort(key=lambda hit: (-hit[1], hit[0]))
        return hits

    def keyword_search(self, flt: VectorFilter, terms: Sequence[str], limit: int = 200
                       ) -> list[tuple[str, list[str]]]:
        from weaviate.classes.query import MetadataQuery

        terms = [t for t in dict.fromkeys(t.lower() for t in terms) if WORD.fullmatch(t)]
        if not terms or limit <= 0:
            return []
        with self._engine("a keyword search"):
            result = self._collection().query.bm25(
                query=" ".join(terms), query_properties=["keywords"], filters=self._filter(flt), limit=limit,
                return_metadata=MetadataQuery(score=True), return_properties=["photo_id", "keywords"])
        ranked = []
        for o in result.objects:
            present = words(o.properties.get("keywords") or "")
            found = [t for t in terms if t in present]
            if found:
                ranked.append((-len(found), -float(o.metadata.score or 0.0), o.properties["photo_id"], found))
        ranked.sort(key=lambda r: r[:3])
        return [(photo_id, found) for _, _, photo_id, found in ranked]

    def count(self, model: str | None = None) -> int:
        """Photos with a vector of `model` (in any space), or all photos in the index."""
        from weaviate.classes.query import Filter

        filters = None if model is None else Filter.any_of(
            [Filter.by_property(f"{space}_model").equal(model) for space in SPACES])
        with self._engine("a count"):
            return int(self._collection().aggregate.over_all(total_count=True, filters=filters).total_count or 0)

    def describe(self) -> str:
        return f"weaviate at {self._address}, collection {self._name}"

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
