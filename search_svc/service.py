"""photos.v1.SearchService: hybrid text search and similar-photo search over the caller's photos.

SearchPhotos fuses up to three signals (docs/SEARCH.md): CLIP (query vs. image), text (query vs. the
sentence vector of the photo's labels and OCR text) and keyword (query words found in the filename,
labels or OCR text). A photo at or above one signal's cut-off is a candidate; every candidate is then
scored by each available signal, and its score is the calibrated probability that it is relevant
(search_svc/calibration.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import datetime as dt
import logging
import math
import queue
import threading
import time
from typing import Iterable

import grpc
import numpy as np
from google.rpc import error_details_pb2
from prometheus_client import Counter, Histogram

from photos.v1 import (embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2, search_pb2,
                       search_pb2_grpc)
from photostore.auth import current_user
from photostore.backends.base import WORD, SPACE_CLIP, SPACE_TEXT, VectorFilter, VectorStore
from photostore.convert import from_timestamp, photo_id_from_name, photo_name
from photostore.errors import ServiceError, invalid, status_details
from photostore.limits import StreamSlots
from photostore.pagination import PageTokens
from photostore.pagination import page_size as read_page_size
from photostore.settings import Settings
from search_svc import lexicon, query_filters
from search_svc.calibration import Calibration
from search_svc.calibration import features as calibration_features

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
MAX_QUERY_CHARS = 1000
# Most photos one BatchGetPhotos call hydrates; also the most hits fetched per signal.
MAX_HYDRATE = 1000
# Candidates fetched per signal, as a multiple of the page size (at least MIN_CANDIDATES): the
# fused ranking can lift a photo that one signal ranks lower.
CANDIDATE_FACTOR = 3
MIN_CANDIDATES = 50
# Most photos a place, album or favourite filter is resolved to (through ListPhotos) and scored
# exactly; a filter matching more is applied to the best MAX_HYDRATE hits of each signal instead.
MAX_ALLOWED = 5000
LIST_PAGE = 1000
# Deadline for calls to other services when the caller set none (or a longer one).
DOWNSTREAM_TIMEOUT_S = 30.0

CLIP, TEXT, KEYWORD = "clip", "text", "keyword"  # SignalScores field names
SPACES = {CLIP: SPACE_CLIP, TEXT: SPACE_TEXT}
# The vector signals' query encoders, in the order they are asked: the sentence encoder answers
# sooner, so its space is searched while CLIP encodes.
ENCODERS = ((TEXT, embed_pb2.TEXT_ENCODER_SENTENCE), (CLIP, embed_pb2.TEXT_ENCODER_CLIP))
KEEP_WARM_QUERY = "a photo kept warm"
# Most expansion words (forms, synonyms, category members) one search looks up besides its terms.
MAX_EXPANSION_WORDS = 80
# FindSimilar by image at once: per user, and in all (per search process).
IMAGE_QUERIES_PER_USER = 2
IMAGE_QUERIES_TOTAL = 8
STAGE_SECONDS = Histogram(
    "search_stage_seconds", "Time of each part of a search: keyword lookup, each signal's query "
    "encoding (from the search's start) and vector lookup, and hydrating the page", ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
KEPT_WARM = Counter("search_kept_warm_total", "Internal queries run while no search came, to keep the path warm")
# Words too common to count as keyword matches. Words are split as the index splits them (WORD).
STOPWORDS = frozenset("""
a an and any are as at be by for from has have in into is it its of on or over some that the their
there these this those to under up was were with without near next onto photo photos picture pictures
image images pic pics shot""".split())


def keyword_terms(query: str) -> list[str]:
    """The query's distinct lower-case words, stopwords left out, in order."""
    return list(dict.fromkeys(w for w in WORD.findall(query.lower()) if w not in STOPWORDS))


def keyword_shares(vectors: VectorStore, flt: VectorFilter, terms: list[str], limit: int
                   ) -> list[tuple[str, float, list[str]]]:
    """(photo_id, share of the query terms found, words found) of the photos with any term. A term
    is found when the photo has it or one of its expansions (search_svc/lexicon.py: "dogs" -> dog,
    "bird" -> eagle, owl, ...). The terms are looked up as before (photos with all of them first);
    then the expansions, in one more lookup of at most MAX_EXPANSION_WORDS words taken in turn
    from each term's list."""
    expansions = lexicon.expand_query(terms)
    found = dict(vectors.keyword_search(flt, terms, limit))
    in_turn = itertools.chain.from_iterable(itertools.zip_longest(*expansions.values()))
    extra = [w for w in dict.fromkeys(in_turn) if w and w not in expansions][:MAX_EXPANSION_WORDS]
    for photo_id, matched in vectors.keyword_search(flt, extra, limit) if extra else ():
        found[photo_id] = found.get(photo_id, []) + matched
    shares = [(photo_id, sum(1 for t in terms if not set(expansions[t]).isdisjoint(matched)) / len(terms), matched)
              for photo_id, matched in found.items()]
    return sorted(shares, key=lambda hit: -hit[1])


def photo_signals(scores: dict[str, float], available: Iterable[str]) -> list[str]:
    """The available signals that judge a photo: the keyword signal always (no word found is
    evidence), a vector signal when the photo has a score of it (a vector of the query's model)."""
    return [s for s in available if s == KEYWORD or s in scores]


@dataclasses.dataclass(frozen=True)
class Fusion:
    """Which signals are asked, their candidate cut-offs and the calibration that turns their scores
    into one probability of relevance (PHOTOSTORE_SEARCH_*, search_svc/calibration.py)."""

    weights: dict[str, float]  # 0: switched off; otherwise scales the signal's fitted terms
    cutoffs: dict[str, float]  # a photo becomes a candidate at or above one signal's cut-off
    calibration: Calibration
    min_probability: float  # hits below it are left out unless the request sets min_score

    @classmethod
    def from_settings(cls, settings: Settings) -> Fusion:
        signals = (CLIP, TEXT, KEYWORD)
        calibration = Calibration.load(settings.search_calibration_path)
        return cls(weights={s: getattr(settings, f"search_weight_{s}") for s in signals},
                   cutoffs={s: getattr(settings, f"search_min_{s}") for s in signals},
                   calibration=calibration,
                   min_probability=(calibration.threshold if settings.search_min_probability is None
                                    else settings.search_min_probability))

    def enabled(self, signal: str) -> bool:
        """A signal weighted 0 is switched off."""
        return self.weights[signal] > 0

    def probabilities(self, candidates: dict[str, Candidate], available: list[str]) -> dict[str, float]:
        """Each candidate's probability of relevance from its scores of the available signals. A
        photo without a vector of a signal's model (not indexed for it yet, or failed) is judged by
        the model of the signals it has, not as if that signal had scored it 0."""
        best = {s: max((c.signals[s] for c in candidates.values() if s in c.signals), default=0.0)
                for s in available}
        result = {}
        for photo_id, candidate in candidates.items():
            has = photo_signals(candidate.signals, available)
            result[photo_id] = self.calibration.probability(
                calibration_features(candidate.signals, best, has), has, self.weights) if has else 0.0
        return result


@dataclasses.dataclass
class Candidate:
    signals: dict[str, float] = dataclasses.field(default_factory=dict)
    matched_terms: list[str] = dataclasses.field(default_factory=list)


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


def _min_score(request, default: float = -1.0) -> float:
    """The request's cut-off, else `default` (-1: every hit counts; scores are >= -1)."""
    if not request.HasField("min_score"):
        return default
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


def _passes_filter(photo: photo_pb2.Photo, flt: VectorFilter) -> bool:
    """The vector store's filter applied to a photo: a date bound needs a time taken."""
    if flt.start or flt.end:
        if not photo.HasField("take_time"):
            return False
        taken = photo.take_time.ToDatetime(tzinfo=dt.timezone.utc)
        if (flt.start and taken < flt.start) or (flt.end and taken >= flt.end):
            return False
    return ((not flt.camera_make or photo.camera_make.lower() == flt.camera_make.lower())
            and (not flt.camera_model or photo.camera_model.lower() == flt.camera_model.lower()))


def _passes_metadata(photo: photo_pb2.Photo, flt: search_pb2.SearchFilter) -> bool:
    """The filters only the ingest service knows (place, album, favourite) applied to a photo."""
    if flt.favorite and not photo.favorite:
        return False
    if flt.album and flt.album not in photo.albums:
        return False
    place = flt.place.strip().lower()
    return not place or place in (photo.place.city.lower(), photo.place.region.lower(),
                                  photo.place.country.lower(), photo.place.country_code.lower())


def _has_metadata_filter(flt: search_pb2.SearchFilter) -> bool:
    return bool(flt.place.strip() or flt.album or flt.favorite)


def _list_request(flt: search_pb2.SearchFilter, page_size: int, page_token: str = "") -> ingest_pb2.ListPhotosRequest:
    """ListPhotos with a search filter's fields."""
    request = ingest_pb2.ListPhotosRequest(
        page_size=page_size, page_token=page_token, camera_make=flt.camera_make, camera_model=flt.camera_model,
        place=flt.place, album=flt.album, favorite=flt.favorite)
    if flt.HasField("start_time"):
        request.start_time.CopyFrom(flt.start_time)
    if flt.HasField("end_time"):
        request.end_time.CopyFrom(flt.end_time)
    return request


def _vector(embedding: embed_pb2.Embedding) -> np.ndarray:
    return np.asarray(embedding.values, dtype=np.float32)


class SearchService(search_pb2_grpc.SearchServiceServicer):
    """Embeds queries through EmbedService (internal: called with the services' key) and hydrates
    hits through IngestService with the caller's own key, so it sees exactly what the caller may."""

    def __init__(self, vectors: VectorStore, embed: embed_pb2_grpc.EmbedServiceStub,
                 ingest: ingest_pb2_grpc.IngestServiceStub, fusion: Fusion, page_tokens: PageTokens,
                 service_auth: list[tuple[str, str]], vocabulary_seconds: float = 30.0):
        self._vectors = vectors
        self._vocabularies = query_filters.VocabularyCache(vocabulary_seconds)
        self._service_auth = service_auth
        # An image query costs the embed service a decode and a forward pass: bounded per user.
        self._image_queries = StreamSlots("image query", per_user=IMAGE_QUERIES_PER_USER,
                                          total=IMAGE_QUERIES_TOTAL, reason="TOO_MANY_IMAGE_QUERIES")
        self._page_tokens = page_tokens
        self._embed = embed
        self._ingest = ingest
        self._fusion = fusion
        lexicon.lexicon()  # the query-expansion data is read now, not by the first search
        self._last_search = time.monotonic()
        self._last_owner: str | None = None

    def keep_warm(self, metadata: list[tuple[str, str]], idle_s: float, stopped: threading.Event) -> None:
        """Until `stopped`: whenever no search came for `idle_s`, runs one internal query (both
        encoders, the last caller's vector and keyword indexes, a call to the ingest service) and
        refreshes the last caller's vocabulary once half its age is gone, so the next search finds
        the models, connections, index pages and vocabulary warm. Call in a thread."""
        while not stopped.wait(idle_s):
            if time.monotonic() - self._last_search < idle_s:
                continue
            try:
                self._warm(metadata)
                KEPT_WARM.inc()
            except (grpc.RpcError, ServiceError) as e:  # a peer down now: the next round tries again
                log.debug("keeping the search path warm failed: %s", e)

    def _warm(self, metadata: list[tuple[str, str]]) -> None:
        options = {"metadata": metadata, "timeout": DOWNSTREAM_TIMEOUT_S}
        owner = self._last_owner
        calls = [self._embed.EmbedText.future(embed_pb2.EmbedTextRequest(texts=[KEEP_WARM_QUERY], encoder=encoder),
                                              **options)
                 for signal, encoder in ENCODERS if self._fusion.enabled(signal)]
        if owner is not None:
            self._vectors.keyword_search(VectorFilter(owner=owner), keyword_terms(KEEP_WARM_QUERY), 1)
            # Before it goes stale: a refresh the next search started would compete with it.
            self._vocabularies.refresh_if_older(owner, self._vocabularies.max_age_s / 2)
        self._ingest.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=1), **options)
        for call in calls:
            try:
                embedded = call.result()
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:  # that model is not ready: nothing to warm
                    continue
                raise
            if owner is not None:
                self._vectors.search(_vector(embedded.embeddings[0]), embedded.model, VectorFilter(owner=owner), 1)

    # RPCs

    def SearchPhotos(self, request: search_pb2.SearchPhotosRequest, context):
        self._searched()
        try:
            return self._search_photos(request, context)
        except ServiceError as e:
            e.abort(context)

    def FindSimilar(self, request: search_pb2.FindSimilarRequest, context):
        self._searched()
        try:
            return self._find_similar(request, context)
        except ServiceError as e:
            e.abort(context)

    def _searched(self) -> None:
        self._last_search = time.monotonic()
        self._last_owner = current_user().id

    # SearchPhotos

    def _search_photos(self, request, context) -> search_pb2.SearchPhotosResponse:
        query = request.query.strip()
        if not query:
            raise invalid("query must not be empty", field="query")
        if len(query) > MAX_QUERY_CHARS:
            raise invalid(f"query is longer than {MAX_QUERY_CHARS} characters", field="query")
        page_size = read_page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        min_score = _min_score(request, self._fusion.min_probability)
        # Words naming a year, month, camera make or place of the caller's library become filters.
        read = query_filters.read_query(query, self._vocabulary(context), request.filter)
        combined = query_filters.merged(request.filter, read.filter)
        flt = _vector_filter(current_user().id, combined)
        if read.semantic != query and not keyword_terms(read.semantic):  # only filters (and stopwords)
            return self._browse(request, query, combined, read.filter, page_size, context)
        offset = self._offset(request, {"query": query})
        fetch = min(MAX_HYDRATE, max(CANDIDATE_FACTOR * (offset + page_size), MIN_CANDIDATES))
        allowed = self._allowed_ids(combined, context)
        if allowed is None and _has_metadata_filter(combined):
            fetch = MAX_HYDRATE  # more photos match than are resolved: filter the best hits
        query = read.semantic

        candidates: dict[str, Candidate] = {}
        # The encoders run while the keywords are looked up.
        started = time.perf_counter()
        embeds = self._embed_query(query, context)
        available, missing = [], {}
        terms = keyword_terms(query)
        if not self._fusion.enabled(KEYWORD):
            missing[KEYWORD] = "switched off (PHOTOSTORE_SEARCH_WEIGHT_KEYWORD=0)"
        elif terms:
            available.append(KEYWORD)
            with STAGE_SECONDS.labels("keyword").time():
                found = keyword_shares(self._vectors, flt, terms, fetch if allowed is None else MAX_ALLOWED)
            for photo_id, share, matched in found:
                if allowed is not None and photo_id not in allowed:
                    continue
                if share >= self._fusion.cutoffs[KEYWORD]:
                    candidate = candidates.setdefault(photo_id, Candidate())
                    candidate.signals[KEYWORD] = share
                    candidate.matched_terms = matched
        else:
            missing[KEYWORD] = "the query has no words to match besides stopwords"
        query_vectors: dict[str, tuple[str, np.ndarray]] = {}
        models = self._vector_signals(embeds, started, flt, fetch, candidates, available, missing, allowed,
                                      query_vectors)
        missing = {signal: missing[signal] for signal in (CLIP, TEXT, KEYWORD) if signal in missing}
        if not available:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                               "no search signal is available: " + "; ".join(
                                   f"{signal}: {why}" for signal, why in missing.items()),
                               reason="NO_SIGNAL_AVAILABLE", metadata=missing)

        # Every candidate is scored exactly by each vector signal, then ranked by its calibrated
        # probability; only the page is hydrated. A photo deleted meanwhile (or no longer
        # matching) is passed over and the next one takes its place.
        with STAGE_SECONDS.labels("rescore").time():
            self._score_candidates(candidates, query_vectors)
        ranked = sorted(((score, photo_id) for photo_id, score
                         in self._fusion.probabilities(candidates, available).items() if score >= min_score),
                        key=lambda ranked_hit: (-ranked_hit[0], ranked_hit[1]))
        hits, position = [], offset
        while len(hits) < page_size and position < len(ranked):
            chunk = ranked[position:position + page_size - len(hits)]
            position += len(chunk)
            with STAGE_SECONDS.labels("hydrate").time():
                photos = {p.name: p for p in self._hydrate([photo_id for _, photo_id in chunk], context)}
            for score, photo_id in chunk:
                photo = photos.get(photo_name(photo_id))
                if photo is None or not _passes_filter(photo, flt) or not _passes_metadata(photo, combined):
                    continue
                candidate = candidates[photo_id]
                hits.append(search_pb2.SearchHit(
                    photo=photo, score=score, signals=search_pb2.SignalScores(**candidate.signals),
                    matched_terms=candidate.matched_terms))
        return search_pb2.SearchPhotosResponse(
            hits=hits, models=models, query_filter=read.filter,
            next_page_token=self._next_token(request, {"query": request.query.strip()}, position,
                                             position < len(ranked)))

    def _vocabulary(self, context) -> query_filters.Vocabulary:
        """The camera makes and places of the caller's library, which query words may name."""
        options = {**self._call_options(context, as_service=False), "timeout": DOWNSTREAM_TIMEOUT_S}

        def fetch() -> query_filters.Vocabulary:
            try:
                summary = self._ingest.SummarizePhotos(ingest_pb2.SummarizePhotosRequest(), **options)
            except grpc.RpcError as e:
                log.warning("SummarizePhotosRequest failed: %s %s", e.code(), e.details())
                raise downstream_error(e) from e
            return query_filters.Vocabulary.from_summary(summary)

        return self._vocabularies.get(current_user().id, fetch)

    def _browse(self, request, query: str, flt: search_pb2.SearchFilter, read: search_pb2.SearchFilter,
                page_size: int, context) -> search_pb2.SearchPhotosResponse:
        """A query of filters only: the matching photos newest first (ListPhotos), each scored 1."""
        fields = {"query": query, "browse": True}
        ingest_token = ""
        if request.page_token:
            position = self._page_tokens.read(request.page_token, self._token_filters(request, fields))
            if not (isinstance(position, list) and len(position) == 1 and isinstance(position[0], str)):
                raise invalid("page_token is not valid", field="page_token", reason="INVALID_PAGE_TOKEN")
            ingest_token = position[0]
        listed = self._call(self._ingest.ListPhotos, _list_request(flt, page_size, ingest_token), context)
        return search_pb2.SearchPhotosResponse(
            hits=[search_pb2.SearchHit(photo=photo, score=1.0) for photo in listed.photos],
            query_filter=read,
            next_page_token=self._page_tokens.mint([listed.next_page_token], self._token_filters(request, fields))
            if listed.next_page_token else "")

    def _allowed_ids(self, flt: search_pb2.SearchFilter, context) -> set[str] | None:
        """The ids of the photos a place, album or favourite filter lets through (with the other
        filters), when at most MAX_ALLOWED; None without such a filter or when more match."""
        if not _has_metadata_filter(flt):
            return None
        ids: set[str] = set()
        token = ""
        while True:
            listed = self._call(self._ingest.ListPhotos, _list_request(flt, LIST_PAGE, token), context)
            if listed.total_size > MAX_ALLOWED:
                return None
            ids.update(p.name.removeprefix("photos/") for p in listed.photos)
            if not (token := listed.next_page_token):
                return ids

    def _score_candidates(self, candidates: dict[str, Candidate],
                          query_vectors: dict[str, tuple[str, np.ndarray]]) -> None:
        """Adds each vector signal's exact score to the candidates found by other signals only (a
        photo without a vector of the query's model gets none)."""
        for signal, (model, vector) in query_vectors.items():
            unscored = {photo_id for photo_id, c in candidates.items() if signal not in c.signals}
            if unscored:
                for photo_id, score in self._search_within(vector, model, SPACES[signal], unscored, -1.0):
                    candidates[photo_id].signals[signal] = score

    def _search_within(self, vector: np.ndarray, model: str, space: str, allowed: set[str],
                       min_score: float) -> list[tuple[str, float]]:
        """Exact cosine scores of the allowed photos' vectors of `model` in `space`."""
        return [(photo_id, score) for photo_id, score
                in self._vectors.scores(vector, model, space, sorted(allowed)).items() if score >= min_score]

    # Page tokens: the offset into the ranking, bound to the query and filters.

    def _offset(self, request, fields: dict) -> int:
        if not request.page_token:
            return 0
        offset = self._page_tokens.read(request.page_token, self._token_filters(request, fields))[0]
        if not isinstance(offset, int) or not 0 <= offset < MAX_HYDRATE:
            raise invalid("page_token is not valid", field="page_token", reason="INVALID_PAGE_TOKEN")
        return offset

    def _next_token(self, request, fields: dict, end: int, more: bool) -> str:
        if not more or end >= MAX_HYDRATE:
            return ""
        return self._page_tokens.mint([end], self._token_filters(request, fields))

    @staticmethod
    def _token_filters(request, fields: dict) -> dict:
        return {**fields, "filter": request.filter.SerializeToString().hex(),
                "min_score": request.min_score if request.HasField("min_score") else None}

    def _embed_query(self, query: str, context) -> dict[str, grpc.Future]:
        """The query's EmbedText calls, one per enabled vector signal, under way (ENCODERS order)."""
        return {signal: self._call_async(self._embed.EmbedText, embed_pb2.EmbedTextRequest(
                    texts=[query], encoder=encoder), context, as_service=True)
                for signal, encoder in ENCODERS if self._fusion.enabled(signal)}

    def _vector_signals(self, embeds: dict[str, grpc.Future], started: float, flt: VectorFilter, fetch: int,
                        candidates: dict[str, Candidate], available: list[str], missing: dict[str, str],
                        allowed: set[str] | None = None,
                        query_vectors: dict[str, tuple[str, np.ndarray]] | None = None) -> list[str]:
        """Adds the CLIP and text hits at or above their cut-offs to `candidates`, each signal to
        `available` or, with why, to `missing`, and each answered query vector (with its model) to
        `query_vectors`; returns the models of those available. An encoder that answers
        UNAVAILABLE (model not ready) is left out; any other failure fails the search."""
        models = {}
        missing.update({signal: f"switched off (PHOTOSTORE_SEARCH_WEIGHT_{signal.upper()}=0)"
                        for signal in (CLIP, TEXT) if not self._fusion.enabled(signal)})
        # Each signal's vectors are searched as soon as its encoder answers, while the other encodes.
        answered: queue.SimpleQueue = queue.SimpleQueue()
        for signal, call in embeds.items():
            call.add_done_callback(lambda done, signal=signal: answered.put((signal, done)))
        for _ in embeds:
            signal, call = answered.get()
            try:
                embedded = call.result()
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    log.warning("EmbedText (%s) failed: %s %s", signal, e.code(), e.details())
                    raise downstream_error(e) from e
                missing[signal] = e.details() or e.code().name
                continue
            models[signal] = embedded.model
            if query_vectors is not None:
                query_vectors[signal] = (embedded.model, _vector(embedded.embeddings[0]))
            STAGE_SECONDS.labels(f"{signal}_encode").observe(time.perf_counter() - started)
            with STAGE_SECONDS.labels(f"{signal}_vectors").time():
                if allowed is None:
                    found = self._vectors.search(_vector(embedded.embeddings[0]), embedded.model,
                                                 flt, fetch, self._fusion.cutoffs[signal])
                else:  # a few photos: every one of them scored
                    found = self._search_within(_vector(embedded.embeddings[0]), embedded.model,
                                                SPACES[signal], allowed, self._fusion.cutoffs[signal])
            for photo_id, score in found:
                candidates.setdefault(photo_id, Candidate()).signals[signal] = score
        available += [signal for signal in (CLIP, TEXT) if signal in models]
        return [models[signal] for signal in (CLIP, TEXT) if signal in models]

    def _hydrate(self, photo_ids: list[str], context) -> list[photo_pb2.Photo]:
        """The caller's photos among `photo_ids`; deleted ones (and those in the trash) are left out."""
        photos = []
        for start in range(0, len(photo_ids), MAX_HYDRATE):
            names = [photo_name(pid) for pid in photo_ids[start:start + MAX_HYDRATE]]
            photos += [p for p in self._call(self._ingest.BatchGetPhotos,
                                             ingest_pb2.BatchGetPhotosRequest(names=names, skip_missing=True),
                                             context).photos if not p.HasField("delete_time")]
        return photos

    # FindSimilar

    def _find_similar(self, request, context) -> search_pb2.FindSimilarResponse:
        page_size = read_page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        min_score = _min_score(request)
        flt = _vector_filter(current_user().id, request.filter)
        source = request.WhichOneof("source")
        if source == "name":
            vector, model, signal = self._vector_of_photo(request.name, context)
        elif source == "image" and request.image:
            with self._image_queries.hold(current_user().id):
                vector, model, signal = self._vector_of_image(request.image, context)
        else:
            raise invalid("set either name or image", field="source")
        fields = {"source": request.name if source == "name" else
                  hashlib.sha256(request.image).hexdigest()}
        offset = self._offset(request, fields)
        end = offset + page_size
        hits = self._ranked_photos(vector, model, signal, flt, end + 1, min_score, context, request.filter)
        if source == "name":  # the photo itself first, even when another has the very same vector
            hits.sort(key=lambda hit: hit.photo.name != request.name)
        return search_pb2.FindSimilarResponse(
            hits=hits[offset:end], models=[model],
            next_page_token=self._next_token(request, fields, end, len(hits) > end))

    def _vector_of_photo(self, name: str, context) -> tuple[np.ndarray, str, str]:
        """The stored CLIP vector of one of the caller's photos, else its text vector (ownership
        checked by IngestService)."""
        photo_id = photo_id_from_name(name)
        found = self._call(self._ingest.GetPhoto, ingest_pb2.GetPhotoRequest(name=photo_name(photo_id)),
                           context)
        for space, signal in ((SPACE_CLIP, CLIP), (SPACE_TEXT, TEXT)):
            obj = self._vectors.get(photo_id, space)
            if obj is not None and obj.owner == current_user().id:
                return np.asarray(obj.vector, dtype=np.float32), obj.model, signal
        raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION, "photo is not indexed yet",
                           reason="PHOTO_NOT_INDEXED",
                           metadata={"name": name,
                                     "status": photo_pb2.PhotoStatus.Name(found.photo.status)})

    def _vector_of_image(self, image: bytes, context) -> tuple[np.ndarray, str, str]:
        """CLIP's vector of the image; while CLIP is not ready, the text vector of its labels and OCR
        text."""
        try:
            embedded = self._call(self._embed.EmbedImages, embed_pb2.EmbedImagesRequest(images=[image]),
                                  context, as_service=True)
            return _vector(embedded.embeddings[0]), embedded.model, CLIP
        except ServiceError as e:
            if e.code != grpc.StatusCode.UNAVAILABLE:
                raise
            clip_reason = e.message
        try:
            analysed = self._call(self._embed.AnalyzeImages,
                                  embed_pb2.AnalyzeImagesRequest(images=[image]), context, as_service=True)
        except ServiceError as e:
            if e.code == grpc.StatusCode.UNAVAILABLE:
                e.message = f"clip: {clip_reason}; text: {e.message}"
            raise
        vector = _vector(analysed.analyses[0].text_embedding)
        if not vector.size:  # nothing recognised in it: no labels above their cut-off, no text
            raise ServiceError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"nothing to search by in this image until CLIP is loaded "
                               f"(clip: {clip_reason}): it has no labels or text",
                               reason="IMAGE_HAS_NO_SIGNAL")
        return vector, analysed.model, TEXT

    def _ranked_photos(self, vector: np.ndarray, model: str, signal: str, flt: VectorFilter, limit: int,
                       min_score: float, context, metadata_filter: search_pb2.SearchFilter | None = None
                       ) -> list[search_pb2.SearchHit]:
        """Up to `limit` vector hits in ranking order, hydrated. Photos deleted meanwhile (whose
        vector is not removed yet), or not passing the place, album or favourite filter, are left
        out, and more hits are fetched in their place."""
        fetch = limit
        while True:
            scored = self._vectors.search(vector, model, flt, fetch, min_score)
            if not scored:
                return []
            photos = {p.name: p for p in self._hydrate([pid for pid, _ in scored], context)
                      if metadata_filter is None or _passes_metadata(p, metadata_filter)}
            hits = [search_pb2.SearchHit(photo=photos[photo_name(pid)], score=score,
                                         signals=search_pb2.SignalScores(**{signal: score}))
                    for pid, score in scored if photo_name(pid) in photos]
            if len(hits) >= limit or len(scored) < fetch or fetch >= MAX_HYDRATE:
                return hits[:limit]
            fetch = min(fetch * 2, MAX_HYDRATE)

    # Calls to other services

    def _call_options(self, context, as_service: bool) -> dict:
        """The caller's authorization (or the services' own), within the caller's deadline."""
        metadata = self._service_auth if as_service else [
            (k, v) for k, v in context.invocation_metadata() if k == "authorization"]
        remaining = context.time_remaining()
        timeout = DOWNSTREAM_TIMEOUT_S if remaining is None else min(remaining, DOWNSTREAM_TIMEOUT_S)
        return {"metadata": metadata, "timeout": timeout}

    def _call_async(self, method, request, context, as_service: bool = False) -> grpc.Future:
        return method.future(request, **self._call_options(context, as_service))

    def _call(self, method, request, context, as_service: bool = False):
        try:
            return method(request, **self._call_options(context, as_service))
        except grpc.RpcError as e:
            log.warning("%s failed: %s %s", type(request).__name__, e.code(), e.details())
            raise downstream_error(e) from e
