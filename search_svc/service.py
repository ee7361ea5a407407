"""photos.v1.SearchService: text and similar-photo search over the caller's vectors."""
from __future__ import annotations

import logging
import math

import grpc
import numpy as np
from google.rpc import error_details_pb2

from photos.v1 import (embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2, search_pb2,
                       search_pb2_grpc)
from photostore.auth import current_user
from photostore.backends.base import VectorFilter, VectorStore
from photostore.convert import from_timestamp, photo_id_from_name, photo_name
from photostore.errors import ServiceError, invalid, not_found, status_details

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
MAX_QUERY_CHARS = 1000
# Most hits fetched to make up for deleted photos: one BatchGetPhotos call's worth.
MAX_HYDRATE = 1000
# Deadline for calls to other services when the caller set none (or a longer one).
DOWNSTREAM_TIMEOUT_S = 30.0


def downstream_error(err: grpc.RpcError) -> ServiceError:
    """The failure of a call to another service, passed on with its code, message and details."""
    code = err.code() or grpc.StatusCode.UNKNOWN
    error = ServiceError(code, err.details() or code.name)
    try:
        status = status_details(err)
    except ValueError:  # trailers disagree with the status line: keep code and message only
        status = None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.field = bad.field_violations[0].field if bad.field_violations else ""
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            error.field = quota.violations[0].subject if quota.violations else ""
    return error


def _page_size(value: int) -> int:
    if value < 0:
        raise invalid("page_size must not be negative", field="page_size")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _min_score(request) -> float:
    """The request's cut-off; without one every hit counts (cosine scores are >= -1)."""
    if not request.HasField("min_score"):
        return -1.0
    value = request.min_score
    if math.isnan(value) or not -1.0 <= value <= 1.0:
        raise invalid("min_score must be between -1 and 1", field="min_score")
    return value


def _vector_filter(owner: str, flt: search_pb2.SearchFilter) -> VectorFilter:
    start = from_timestamp(flt.start_time, flt.HasField("start_time"))
    end = from_timestamp(flt.end_time, flt.HasField("end_time"))
    if start and end and start >= end:
        raise invalid("filter.start_time must be before filter.end_time", field="filter.end_time")
    return VectorFilter(owner=owner, start=start, end=end,
                        camera_make=flt.camera_make.strip(), camera_model=flt.camera_model.strip())


class SearchService(search_pb2_grpc.SearchServiceServicer):
    """Embeds queries through EmbedService and hydrates hits through IngestService, both called
    with the caller's own key so they see exactly what the caller may see."""

    def __init__(self, vectors: VectorStore, embed: embed_pb2_grpc.EmbedServiceStub,
                 ingest: ingest_pb2_grpc.IngestServiceStub):
        self._vectors = vectors
        self._embed = embed
        self._ingest = ingest

    # RPCs

    def SearchPhotos(self, request: search_pb2.SearchPhotosRequest, context):
        try:
            return self._search_photos(request, context)
        except ServiceError as e:
            e.abort(context)

    def FindSimilar(self, request: search_pb2.FindSimilarRequest, context):
        try:
            return self._find_similar(request, context)
        except ServiceError as e:
            e.abort(context)

    # Implementation

    def _search_photos(self, request, context) -> search_pb2.SearchPhotosResponse:
        query = request.query.strip()
        if not query:
            raise invalid("query must not be empty", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise invalid(f"query is longer than {MAX_QUERY_CHARS} characters", field="query")
        page_size = _page_size(request.page_size)
        min_score = _min_score(request)
        flt = _vector_filter(current_user().id, request.filter)
        embedded = self._call(self._embed.EmbedText, embed_pb2.EmbedTextRequest(texts=[query]), context)
        vector = np.asarray(embedded.embeddings[0].values, dtype=np.float32)
        hits = self._ranked_photos(vector, embedded.model, flt, page_size, min_score, context)
        return search_pb2.SearchPhotosResponse(hits=hits, model=embedded.model)

    def _find_similar(self, request, context) -> search_pb2.FindSimilarResponse:
        page_size = _page_size(request.page_size)
        min_score = _min_score(request)
        flt = _vector_filter(current_user().id, request.filter)
        source = request.WhichOneof("source")
        if source == "name":
            vector, model = self._vector_of_photo(request.name, context)
        elif source == "image" and request.image:
            embedded = self._call(self._embed.EmbedImages,
                                  embed_pb2.EmbedImagesRequest(images=[request.image]), context)
            vector = np.asarray(embedded.embeddings[0].values, dtype=np.float32)
            model = embedded.model
        else:
            raise invalid("set either name or image", field="source")
        hits = self._ranked_photos(vector, model, flt, page_size, min_score, context)
        return search_pb2.FindSimilarResponse(hits=hits, model=model)

    def _vector_of_photo(self, name: str, context) -> tuple[np.ndarray, str]:
        """The stored vector of one of the caller's photos (ownership checked by IngestService)."""
        photo_id = photo_id_from_name(name)
        found = self._call(self._ingest.BatchGetPhotos,
                           ingest_pb2.BatchGetPhotosRequest(names=[photo_name(photo_id)]), context)
        if not found.photos:
            raise not_found(f"photo '{name}' not found")
        obj = self._vectors.get(photo_id)
        if obj is None or obj.owner != current_user().id:
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "photo is not indexed yet",
                               reason="PHOTO_NOT_INDEXED",
                               metadata={"name": name,
                                         "status": photo_pb2.PhotoStatus.Name(found.photos[0].status)})
        return np.asarray(obj.vector, dtype=np.float32), obj.model

    def _ranked_photos(self, vector: np.ndarray, model: str, flt: VectorFilter, limit: int,
                       min_score: float, context) -> list[search_pb2.SearchHit]:
        """Up to `limit` vector hits in ranking order, hydrated. Photos deleted meanwhile (whose
        vector is not removed yet) are left out, and more hits are fetched in their place."""
        fetch = limit
        while True:
            scored = self._vectors.search(vector, model, flt, fetch, min_score)
            if not scored:
                return []
            found = self._call(
                self._ingest.BatchGetPhotos,
                ingest_pb2.BatchGetPhotosRequest(names=[photo_name(pid) for pid, _ in scored]), context)
            photos = {p.name: p for p in found.photos}
            hits = [search_pb2.SearchHit(photo=photos[photo_name(pid)], score=score)
                    for pid, score in scored if photo_name(pid) in photos]
            if len(hits) >= limit or len(scored) < fetch or fetch >= MAX_HYDRATE:
                return hits[:limit]
            fetch = min(fetch * 2, MAX_HYDRATE)

    @staticmethod
    def _call(method, request, context):
        """Calls another service with the caller's authorization, within the caller's deadline."""
        metadata = [(k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        remaining = context.time_remaining()
        timeout = DOWNSTREAM_TIMEOUT_S if remaining is None else min(remaining, DOWNSTREAM_TIMEOUT_S)
        try:
            return method(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as e:
            log.warning("%s failed: %s %s", type(request).__name__, e.code(), e.details())
            raise downstream_error(e) from e
