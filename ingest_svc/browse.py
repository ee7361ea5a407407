"""Browsing without a query: SummarizePhotos' counts, and filling in the place of photos stored
before places were geocoded."""
from __future__ import annotations

import logging
import queue
import threading

from ingest_svc import places
from photos.v1 import ingest_pb2, photo_pb2
from photostore.backends.base import MetadataStore, PhotoFilter, PhotoSummary

log = logging.getLogger(__name__)

# Photos geocoded and written per batch by the backfill.
BACKFILL_BATCH = 500


def summary_to_proto(summary: PhotoSummary) -> ingest_pb2.SummarizePhotosResponse:
    return ingest_pb2.SummarizePhotosResponse(
        months=[ingest_pb2.MonthCount(year=y, month=m, count=n) for y, m, n in summary.months],
        cameras=[ingest_pb2.CameraCount(camera_make=make, camera_model=model, count=n)
                 for make, model, n in summary.cameras],
        places=[ingest_pb2.PlaceCount(place=photo_pb2.Place(city=c, region=r, country=co, country_code=cc),
                                      count=n)
                for (c, r, co, cc), n in summary.places],
        total_size=summary.total)


class PlaceBackfill:
    """Geocodes the photos stored before places existed (coordinates but no place), one owner at a
    time in one background thread: an owner is queued on its first ListPhotos or SummarizePhotos
    in this process. Idempotent (every replica writes the same place), so replicas need no
    coordination, and a failure only leaves the owner to the next process start."""

    def __init__(self, metadata: MetadataStore):
        self._metadata = metadata
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._owners: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def ensure(self, owner: str) -> None:
        with self._lock:
            if owner in self._seen:
                return
            self._seen.add(owner)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="place-backfill", daemon=True)
                self._thread.start()
        self._owners.put(owner)

    def close(self) -> None:
        with self._lock:
            thread = self._thread
        if thread is not None:
            self._owners.put(None)
            thread.join(timeout=5)

    def _run(self) -> None:
        while (owner := self._owners.get()) is not None:
            try:
                if filled := self.fill(owner):
                    log.info("places: filled in %d photos of %s", filled, owner)
            except Exception:  # noqa: BLE001 - left for the next start; browsing goes on
                log.exception("filling in the places of %s failed", owner)

    def fill(self, owner: str) -> int:
        """Geocodes and writes the owner's photos (in the trash too) that have coordinates but no
        place; returns how many."""
        filled = 0
        for deleted in (False, True):
            after = None
            while True:
                page = self._metadata.list_photos(owner, filter=PhotoFilter(deleted=deleted),
                                                  page_size=BACKFILL_BATCH, after=after)
                todo = [r for r in page.records
                        if not r.place_country_code and places.valid_point(r.latitude, r.longitude)]
                found = places.reverse_geocode_many([(r.latitude, r.longitude) for r in todo])
                for record, place in zip(todo, found):
                    self._metadata.update_photo(
                        record.id, place_city=place.city, place_region=place.region,
                        place_country=place.country, place_country_code=place.country_code)
                filled += len(todo)
                if (after := page.next_after) is None:
                    break
        return filled
