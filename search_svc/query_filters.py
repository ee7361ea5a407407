"""Query understanding: the words of a search query that name a filter rather than something to see.

"canon 2019", "paris", "june 2021 beach", "dog in france": a year (1900-2099), a month followed by
its year, a camera make in the caller's library ("canon" for make "Canon", "nikon" for "NIKON
CORPORATION") and a place in the caller's library (a city, region or country name, several words
as well: "new york city", "ile de france"; case and accents ignored) become filters, and those
words leave the query. The caller's makes and places come from SummarizePhotos, so a word only
becomes a filter where the library has photos it could match: "nice sunset" is a place only for a
library with photos taken in Nice.

Each kind is read once (the first one wins; a second year stays a word), and a field the request's
own filter sets is never read from the query: the request's filter wins, the word stays.
Country codes are not read ("us", "it" and "de" are words).
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import re
import threading
import time
import unicodedata
from typing import Callable

from photos.v1 import ingest_pb2, search_pb2
from photostore.backends.base import WORD

log = logging.getLogger(__name__)

YEAR = re.compile(r"(19|20)[0-9]{2}")
MONTHS = {name: number for number, names in enumerate((
    ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
    ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
    ("october", "oct"), ("november", "nov"), ("december", "dec")), start=1) for name in names}
# Longest place or make name read, in words.
MAX_NAME_WORDS = 5
# A first word of a make ("nikon" of "NIKON CORPORATION") counts only when at least this long.
MIN_MAKE_WORD_CHARS = 3


def words(text: str) -> list[str]:
    """Lower-case words without accents, split as the keyword index splits them."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return WORD.findall(plain.lower())


@dataclasses.dataclass
class Vocabulary:
    """The names a query's words may match: normalized words -> the value as stored."""
    makes: dict[str, str] = dataclasses.field(default_factory=dict)
    places: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: ingest_pb2.SummarizePhotosResponse) -> Vocabulary:
        vocabulary = cls()
        # Most photos first: where two makes share a first word, the commoner one takes it.
        for camera in summary.cameras:
            if make := camera.camera_make.strip():
                key = " ".join(words(make))
                vocabulary.makes.setdefault(key, make)
                first = key.split(" ")[0]
                if len(first) >= MIN_MAKE_WORD_CHARS:
                    vocabulary.makes.setdefault(first, make)
        for counted in summary.places:
            for name in (counted.place.city, counted.place.region, counted.place.country):
                if key := " ".join(words(name)):
                    vocabulary.places.setdefault(key, name)
        vocabulary.makes.pop("", None)
        return vocabulary


class VocabularyCache:
    """Each owner's Vocabulary, asked of the ingest service (SummarizePhotos, a walk of the owner's
    photos) once and then at most every `max_age_s`: an older one is answered at once while one
    background call refreshes it, so searches never wait on a large library's summary after the
    first. A make or place new to the library is read from queries within about max_age_s; 0 asks
    on every search. An idle service refreshes ahead (refresh_if_older), so the first search after
    a pause finds it fresh: a refresh in the background competes with that search for the CPU."""

    def __init__(self, max_age_s: float, max_owners: int = 256, clock: Callable[[], float] = time.monotonic):
        self._max_age_s = max_age_s
        self._clock = clock
        self._max_owners = max_owners
        self._entries: collections.OrderedDict[str, tuple[float, Vocabulary]] = collections.OrderedDict()
        self._fetches: dict[str, Callable[[], Vocabulary]] = {}  # the latest per owner, for refresh_if_older
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    @property
    def max_age_s(self) -> float:
        return self._max_age_s

    def get(self, owner: str, fetch: Callable[[], Vocabulary]) -> Vocabulary:
        """The owner's vocabulary; `fetch` asks for it (with the caller's credentials: it may run
        in a background thread after this returns)."""
        if self._max_age_s <= 0:
            return fetch()
        with self._lock:
            self._fetches[owner] = fetch
            entry = self._entries.get(owner)
            stale = entry is not None and self._clock() - entry[0] >= self._max_age_s
            refresh = stale and owner not in self._refreshing
            if refresh:
                self._refreshing.add(owner)
        if entry is None:
            vocabulary = fetch()
            self._put(owner, vocabulary)
            return vocabulary
        if refresh:
            threading.Thread(target=self._refresh, args=(owner, fetch), name="vocabulary-refresh",
                             daemon=True).start()
        return entry[1]

    def refresh_if_older(self, owner: str, age_s: float) -> None:
        """Refreshes the owner's vocabulary here and now (with the fetch of their latest search) when
        it is at least age_s old and no refresh is under way."""
        with self._lock:
            entry, fetch = self._entries.get(owner), self._fetches.get(owner)
            if entry is None or fetch is None or self._clock() - entry[0] < age_s or owner in self._refreshing:
                return
            self._refreshing.add(owner)
        self._refresh(owner, fetch)

    def _refresh(self, owner: str, fetch: Callable[[], Vocabulary]) -> None:
        try:
            self._put(owner, fetch())
        except Exception as e:  # noqa: BLE001 - the old one serves until the next try
            log.warning("refreshing the search vocabulary of %s failed: %s", owner, e)
        finally:
            with self._lock:
                self._refreshing.discard(owner)

    def _put(self, owner: str, vocabulary: Vocabulary) -> None:
        with self._lock:
            self._entries[owner] = (self._clock(), vocabulary)
            self._entries.move_to_end(owner)
            while len(self._entries) > self._max_owners:
                self._fetches.pop(self._entries.popitem(last=False)[0], None)


@dataclasses.dataclass
class ReadQuery:
    # What is left to search by meaning ("" when every word was a filter).
    semantic: str
    # The filters read from the words (SearchPhotosResponse.query_filter).
    filter: search_pb2.SearchFilter


def read_query(query: str, vocabulary: Vocabulary, explicit: search_pb2.SearchFilter) -> ReadQuery:
    tokens = words(query)
    found = search_pb2.SearchFilter()
    dates_taken = explicit.HasField("start_time") or explicit.HasField("end_time")
    make_taken, place_taken = bool(explicit.camera_make.strip()), bool(explicit.place.strip())
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        used = 0
        if not dates_taken:
            if tokens[i] in MONTHS and i + 1 < len(tokens) and YEAR.fullmatch(tokens[i + 1]):
                _set_range(found, int(tokens[i + 1]), MONTHS[tokens[i]])
                used = 2
            elif YEAR.fullmatch(tokens[i]):
                _set_range(found, int(tokens[i]), None)
                used = 1
            dates_taken = used > 0
        if not used and not place_taken:
            used, name = _longest(tokens, i, vocabulary.places)
            if used:
                found.place, place_taken = name, True
        if not used and not make_taken:
            used, name = _longest(tokens, i, vocabulary.makes)
            if used:
                found.camera_make, make_taken = name, True
        if used:
            i += used
        else:
            kept.append(tokens[i])
            i += 1
    if len(kept) == len(tokens):  # nothing read: the query goes on as the user wrote it
        return ReadQuery(semantic=query, filter=found)
    return ReadQuery(semantic=" ".join(kept), filter=found)


def merged(explicit: search_pb2.SearchFilter, read: search_pb2.SearchFilter) -> search_pb2.SearchFilter:
    """The request's filter with the fields read from the query (which never overlap it)."""
    combined = search_pb2.SearchFilter()
    combined.CopyFrom(explicit)
    combined.MergeFrom(read)
    return combined


def _longest(tokens: list[str], start: int, names: dict[str, str]) -> tuple[int, str]:
    """(words used, stored name) of the longest name starting at tokens[start]; (0, "") if none."""
    for n in range(min(MAX_NAME_WORDS, len(tokens) - start), 0, -1):
        if name := names.get(" ".join(tokens[start:start + n])):
            return n, name
    return 0, ""


def _set_range(flt: search_pb2.SearchFilter, year: int, month: int | None) -> None:
    """Taken in that year (or month), UTC."""
    if month is None:
        start, end = dt.datetime(year, 1, 1), dt.datetime(year + 1, 1, 1)
    else:
        start = dt.datetime(year, month, 1)
        end = dt.datetime(year + (month == 12), month % 12 + 1, 1)
    flt.start_time.FromDatetime(start.replace(tzinfo=dt.timezone.utc))
    flt.end_time.FromDatetime(end.replace(tzinfo=dt.timezone.utc))
