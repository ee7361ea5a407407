"""`photostore`: run the stack, add users, import folders, search and check status, and manage
the trash and albums (photostore/cli_albums.py).

Everything but `up` and `users add` talks to the services over gRPC.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import datetime as dt
import errno
import fcntl
import importlib
import mimetypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterator, Sequence

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tenacity import (retry, retry_if_exception, retry_if_result, stop_after_attempt, stop_after_delay,
                      stop_when_event_set, wait_exponential, wait_fixed)
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from photos.v1 import (embed_pb2, embed_pb2_grpc, ingest_pb2, ingest_pb2_grpc, photo_pb2, search_pb2,
                       search_pb2_grpc)
from photostore.auth import bearer_metadata, hash_key, new_api_key, service_api_key
from photostore import deployment, file_scan, uploads
from photostore.backends import open_blobs, open_events, open_metadata, open_users, open_vectors
from photostore.convert import role_name
from photostore.server import make_channel
from photostore.settings import Settings, get_settings

API_KEY_ENV = "PHOTOSTORE_API_KEY"
# Written by `up --scale-out` in the data dir: the backend settings of the running stack.
SCALE_OUT_ENV_FILE = "scale-out.env"
PORTS = ("blobs", "metadata", "events", "vectors")
# Upload failures that mean "this file is not acceptable", not "something went wrong".
REJECTION_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
DONE_STATUSES = {photo_pb2.PHOTO_STATUS_INDEXED, photo_pb2.PHOTO_STATUS_FAILED}
STARTUP_TIMEOUT_S = 120.0
# How long `up` lets the model load before it reports the model's state.
MODEL_WAIT_S = 15.0
# A service that exits under `up` is started again after this delay, doubled at each exit up to
# the maximum, and back to the first once it stayed up RESTART_STABLE_S.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
RESTART_STABLE_S = 60.0
# In the data dir: flock'ed by the `up` that runs on it.
UP_LOCK_FILE = "up.lock"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Columns of `search`, as SignalScores names them.
SEARCH_SIGNALS = ("clip", "text", "keyword")
STATUS_LABELS = {
    photo_pb2.PHOTO_STATUS_UNSPECIFIED: "",
    photo_pb2.PHOTO_STATUS_UPLOADED: "uploaded",
    photo_pb2.PHOTO_STATUS_INDEXED: "indexed",
    photo_pb2.PHOTO_STATUS_FAILED: "failed",
}


class CliError(Exception):
    """A failure reported to the user as one line, exit status 1."""


def _api_key(args) -> str:
    key = args.key or os.environ.get(API_KEY_ENV, "")
    if not key:
        raise CliError(f"no API key: pass --key or set {API_KEY_ENV} "
                       "(create one with `photostore users add NAME`)")
    return key


def run_parallel(work, items: Sequence, jobs: int, outcomes: tuple[str, ...], desc: str, unit: str
                 ) -> tuple[list, dict[str, int]]:
    """work(item) for every item on `jobs` threads with a progress bar counting each result's
    `outcome`; returns the results (in completion order) and the counts. Ctrl-C lets the calls
    under way finish and starts no other."""
    results, counts = [], dict.fromkeys(outcomes, 0)
    with ThreadPoolExecutor(max_workers=jobs) as pool, \
            tqdm(total=len(items), unit=unit, desc=desc, disable=None) as bar:
        futures = [pool.submit(work, item) for item in items]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                counts[result.outcome] += 1
                bar.update(1)
                bar.set_postfix(counts, refresh=False)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise
    return results, counts


def _rpc_failure(err: grpc.RpcError, target: str) -> CliError:
    hint = f" (is the service at {target} running? try `photostore up`)" \
        if err.code() == grpc.StatusCode.UNAVAILABLE else ""
    return CliError(f"{err.code().name}: {err.details()}{hint}")


# users add

def cmd_users_add(args, settings: Settings) -> int:
    name = args.name.strip()
    if not name or name.startswith("_") or any(c.isspace() for c in name):
        raise CliError(f"invalid user name {args.name!r}: no spaces, must not start with '_'")
    key = new_api_key()
    try:
        user = open_users(settings).create_user(name, hash_key(key))
    except ValueError:
        raise CliError(f"user '{name}' already exists") from None
    print(f"created user '{user.name}' (id {user.id})")
    print(f"API key (shown only once, store it now): {key}")
    print(f"  export {API_KEY_ENV}={key}")
    return 0


def cmd_users_key(args, settings: Settings) -> int:
    """A new key for the user; its other keys and its browser sessions end (a session was signed
    in with a key, perhaps the one being replaced). Like `users add`, it opens the users store."""
    users = open_users(settings)
    user = users.user_by_name(args.name)
    if user is None or args.name.startswith("_"):  # "_service" is the services' own key
        raise CliError(f"no user '{args.name}'")
    key = new_api_key()
    ended = users.replace_api_keys(user.id, hash_key(key))
    print(f"new API key of '{user.name}' (shown only once, store it now): {key}")
    print(f"  export {API_KEY_ENV}={key}")
    print(f"its older keys are revoked and {ended} browser session(s) ended; running services "
          f"refuse the old keys within {2 * settings.auth_cache_seconds:g}s (PHOTOSTORE_AUTH_CACHE_SECONDS, "
          f"on ingest and again on search)")
    return 0


# import

@dataclasses.dataclass
class UploadResult:
    path: Path
    outcome: str  # "uploaded" | "duplicate" | "rejected" | "failed"
    name: str = ""
    status: int = photo_pb2.PHOTO_STATUS_UNSPECIFIED
    reason: str = ""  # why it was rejected, failed, or failed to index
    similar: list[str] = dataclasses.field(default_factory=list)  # filenames it looks like


def file_digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return uploads.digest(f)


def upload_request_id(path: Path, sha256: str) -> str:
    """Same file with the same bytes -> same id, so a rerun (or retry) is idempotent."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"file://{path.resolve()}#{sha256}"))


def _upload_messages(path: Path, sha256: str, size: int) -> Iterator[ingest_pb2.UploadPhotoRequest]:
    with path.open("rb") as f:
        yield from uploads.upload_requests(
            f, filename=path.name, content_type=mimetypes.guess_type(path.name)[0] or "",
            size=size, sha256=sha256, request_id=upload_request_id(path, sha256))


def _is_unavailable(err: BaseException) -> bool:
    return isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAVAILABLE


def upload_file(stub: ingest_pb2_grpc.IngestServiceStub, metadata, path: Path,
                started: dt.datetime) -> UploadResult:
    """Uploads one file; retries while the service is unavailable (safe: the request id is stable).

    A rerun replays the request id and gets the photo stored back then, not flagged duplicate;
    a photo created before this import `started` counts as a duplicate all the same.
    """
    try:
        sha256, size = file_digest(path)
    except OSError as e:
        return UploadResult(path, "failed", reason=str(e))

    @retry(retry=retry_if_exception(_is_unavailable), stop=stop_after_attempt(4),
           wait=wait_exponential(multiplier=0.5, max=5), reraise=True)
    def send() -> ingest_pb2.UploadPhotoResponse:
        return stub.UploadPhoto(_upload_messages(path, sha256, size), metadata=metadata)

    try:
        response = send()
    except grpc.RpcError as e:
        outcome = "rejected" if e.code() in REJECTION_CODES else "failed"
        return UploadResult(path, outcome, reason=f"{e.code().name}: {e.details()}")
    photo = response.photo
    stored_before = photo.create_time.ToDatetime(tzinfo=dt.timezone.utc) < started
    return UploadResult(path, "duplicate" if response.duplicate or stored_before else "uploaded",
                        name=photo.name, status=photo.status, reason=photo.status_reason,
                        similar=[p.filename or p.name for p in response.similar_photos])


def text_settled(photo: photo_pb2.Photo) -> bool:
    """Its later stage (reading text) is over, or will never run: failed photos get none."""
    return photo.status == photo_pb2.PHOTO_STATUS_FAILED or (
        photo.status == photo_pb2.PHOTO_STATUS_INDEXED and photo.text_state != photo_pb2.STAGE_STATE_PENDING)


@dataclasses.dataclass
class WaitOutcome:
    failed: list[tuple[UploadResult, str]]  # not searchable, with why
    text_failed: list[tuple[UploadResult, str]]  # searchable, but their text could not be read


def wait_until_indexed(stub: ingest_pb2_grpc.IngestServiceStub, metadata, by_name: dict[str, UploadResult],
                       timeout_s: float | None) -> WaitOutcome:
    """Follows WatchPhotos until every photo is searchable (or failed), then until its text is
    read, with a progress bar for each."""
    pending = {name for name, r in by_name.items() if r.status not in DONE_STATUSES}
    failed = [(r, r.reason) for r in by_name.values() if r.status == photo_pb2.PHOTO_STATUS_FAILED]
    text_pending = {name for name, r in by_name.items() if r.status != photo_pb2.PHOTO_STATUS_FAILED}
    stream = stub.WatchPhotos(ingest_pb2.WatchPhotosRequest(names=sorted(text_pending), send_initial=True),
                              metadata=metadata, timeout=timeout_s) if text_pending else None
    text_failed: list[tuple[str, str]] = []
    try:
        if stream is not None:
            failures, text_failed = follow_until_done(stream, pending, total=len(by_name), desc="searchable",
                                                      text_pending=text_pending)
            failed += [(by_name[name], why) for name, why in failures]
    finally:
        if stream is not None:
            stream.cancel()
    if pending or text_pending:
        raise CliError(f"stopped waiting with {len(pending)} photo(s) not searchable and "
                       f"{len(text_pending)} not text-read yet")
    return WaitOutcome(failed, [(by_name[name], why) for name, why in text_failed])


def follow_until_done(stream, pending: set[str], *, total: int, desc: str, text_pending: set[str] | None = None
                      ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Follows a WatchPhotos stream, with a progress bar, until each photo in `pending` (emptied
    as it goes) is indexed, failed or deleted, and each in `text_pending` has its text read (a
    second bar); returns (name, why) of those not indexed, and of those whose text failed."""
    failed: list[tuple[str, str]] = []
    text_failed: list[tuple[str, str]] = []
    text_pending = set() if text_pending is None else text_pending
    text_total = len(text_pending)
    with contextlib.ExitStack() as bars:
        bar = bars.enter_context(tqdm(total=total, initial=total - len(pending), unit="photo", desc=desc,
                                      disable=None))
        text_bar = bars.enter_context(tqdm(total=text_total, unit="photo", desc="text read", position=1,
                                           disable=None)) if text_total else None
        for change in stream:
            if not (pending or text_pending):
                break
            photo, name = change.photo, change.photo.name
            deleted = change.change_type == photo_pb2.PHOTO_CHANGE_TYPE_DELETED
            if name in pending and (deleted or photo.status in DONE_STATUSES):
                pending.discard(name)
                bar.update(1)
                if deleted:
                    failed.append((name, "deleted"))
                elif photo.status == photo_pb2.PHOTO_STATUS_FAILED:
                    failed.append((name, photo.status_reason))
            if name in text_pending and (deleted or text_settled(photo)):
                text_pending.discard(name)
                text_bar.update(1)
                if photo.text_state == photo_pb2.STAGE_STATE_FAILED:
                    text_failed.append((name, photo.text_state_reason))
            if not (pending or text_pending):
                break
    return failed, text_failed


def _print_skips(scan: file_scan.Scan, verbose: bool) -> None:
    if scan.skipped:
        print(f"skipped {len(scan.skipped)}, by reason:")
        for line in file_scan.skip_report(scan.skipped, verbose=verbose):
            print(line)


def cmd_import(args, settings: Settings) -> int:
    roots = [Path(p) for p in args.paths]
    if missing := [str(p) for p in roots if not p.exists()]:
        raise CliError(f"no such file or folder: {', '.join(missing)}")
    if args.jobs < 1:
        raise CliError("--jobs must be at least 1")
    metadata = bearer_metadata(_api_key(args))
    target = settings.target("ingest")
    with tqdm(unit="file", desc="scanning", disable=None, leave=False) as bar:
        scan = file_scan.scan_paths(roots, recursive=args.recursive, max_bytes=settings.max_upload_bytes,
                                    progress=bar.update)
    paths = scan.files
    if not paths:
        print("no photos to upload" + ("" if args.recursive else " (sub-folders not looked into: "
                                        "drop --no-recursive)") + f"; skipped {len(scan.skipped)}")
        _print_skips(scan, args.verbose)
        return 0
    with make_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:  # one cheap call first: a wrong key or a stopped service fails once, not per file
            stub.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=1), metadata=metadata, timeout=30)
        except grpc.RpcError as e:
            raise _rpc_failure(e, target) from e
        started = dt.datetime.now(dt.timezone.utc)
        results, counts = run_parallel(lambda p: upload_file(stub, metadata, p, started), paths, args.jobs,
                                       ("uploaded", "duplicate", "rejected", "failed"), "uploading", "file")
        # The server's refusals (a corrupt image, too many pixels) count as failures: the file
        # looked like a photo and is not stored.
        failed = sorted((r for r in results if r.outcome in ("rejected", "failed")), key=lambda r: r.path)
        print(f"uploaded {counts['uploaded']}, already there {counts['duplicate']}, "
              f"skipped {len(scan.skipped)}, failed {len(failed)}")
        for r in failed:
            print(f"  failed: {r.path}: {r.reason}")
        for r in sorted((r for r in results if r.similar), key=lambda r: r.path):
            print(f"  {r.path}: looks like an existing photo: {', '.join(r.similar)}")
        _print_skips(scan, args.verbose)
        # One entry per photo: a copy of a file under another name is the same photo.
        stored = {r.name: r for r in results if r.outcome in ("uploaded", "duplicate")}
        index_failures = []
        if args.wait and stored:
            try:
                waited = wait_until_indexed(stub, metadata, stored, args.wait_timeout)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CliError(f"photos not all indexed after {args.wait_timeout:g}s") from e
                raise _rpc_failure(e, target) from e
            index_failures = waited.failed
            print(f"searchable {len(stored) - len(index_failures)}, failed {len(index_failures)}; "
                  f"text read {len(stored) - len(index_failures) - len(waited.text_failed)}"
                  + (f", text not read {len(waited.text_failed)}" if waited.text_failed else ""))
            for r, reason in index_failures:
                print(f"  not indexed: {r.path} ({r.name}): {reason}")
            for r, reason in waited.text_failed:
                print(f"  text not read (still searchable): {r.path} ({r.name}): {reason}")
    return 1 if failed or index_failures else 0


# search

def _time_text(photo: photo_pb2.Photo) -> str:
    if not photo.HasField("take_time"):
        return "-"
    return photo.take_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")


def _signal_text(signals: search_pb2.SignalScores, signal: str) -> str:
    return f"{getattr(signals, signal):.3f}" if signals.HasField(signal) else "-"


def cmd_search(args, settings: Settings) -> int:
    metadata = bearer_metadata(_api_key(args))
    target = settings.target("search")
    request = search_pb2.SearchPhotosRequest(query=args.query, page_size=args.limit, min_score=args.min_score)
    with make_channel(target) as channel:
        try:
            response = search_pb2_grpc.SearchServiceStub(channel).SearchPhotos(
                request, metadata=metadata, timeout=60)
        except grpc.RpcError as e:
            raise _rpc_failure(e, target) from e
    if not response.hits:
        print("no matches")
        return 0
    print(f"{'rank':>4}  {'score':>6}  " + "  ".join(f"{s:>7}" for s in SEARCH_SIGNALS)
          + f"  {'filename':<32}  {'name':<40}  {'taken':<20}  matched")
    for rank, hit in enumerate(response.hits, 1):
        p = hit.photo
        signals = "  ".join(f"{_signal_text(hit.signals, s):>7}" for s in SEARCH_SIGNALS)
        print(f"{rank:>4}  {hit.score:6.3f}  {signals}  {p.filename:<32}  {p.name:<40}  "
              f"{_time_text(p):<20}  {', '.join(hit.matched_terms)}")
    print(f"models: {', '.join(response.models)}")
    return 0


# duplicates

def cmd_duplicates(args, settings: Settings) -> int:
    """Lists the groups of photos that look alike, the one to keep first."""
    metadata = bearer_metadata(_api_key(args))
    target = settings.target("ingest")
    count = 0
    with make_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        request = ingest_pb2.ListDuplicateGroupsRequest(page_size=100)
        while True:
            try:
                response = stub.ListDuplicateGroups(request, metadata=metadata, timeout=120)
            except grpc.RpcError as e:
                raise _rpc_failure(e, target) from e
            for group in response.groups:
                count += 1
                print(f"group {count} ({len(group.photos)} photos):")
                for i, p in enumerate(group.photos):
                    print(f"  {'keep' if i == 0 else '    '}  {p.name:<40}  {p.filename:<32}  "
                          f"{p.width}x{p.height}  {p.size_bytes:>10} B  "
                          f"uploaded {p.create_time.ToDatetime():%Y-%m-%d %H:%M}")
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
    print(f"{count} {'group' if count == 1 else 'groups'} of photos that look alike" if count
          else "no photos look alike")
    return 0


# export

def cmd_export(args, settings: Settings) -> int:
    from photos.v1 import album_pb2_grpc
    from photostore import export

    if args.jobs < 1:
        raise CliError("--jobs must be at least 1")
    metadata = bearer_metadata(_api_key(args))
    dest = Path(args.dest)
    ingest_target, search_target = settings.target("ingest"), settings.target("search")
    with make_channel(ingest_target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            if args.query is not None:
                with make_channel(search_target) as search_channel:
                    try:
                        photos = export.search_photos(search_pb2_grpc.SearchServiceStub(search_channel), metadata,
                                                      args.query, min_score=args.min_score, limit=args.limit)
                    except grpc.RpcError as e:
                        raise _rpc_failure(e, search_target) from e
            elif args.album is not None:
                album = export.resolve_album(album_pb2_grpc.AlbumServiceStub(channel), metadata, args.album)
                photos = export.list_photos(stub, metadata, album=album)
            else:
                photos = export.list_photos(stub, metadata)
        except export.ExportError as e:
            raise CliError(str(e)) from None
        except grpc.RpcError as e:
            raise _rpc_failure(e, ingest_target) from e
        if not photos:
            print("no photos to export")
            return 0
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CliError(f"cannot create {dest}: {e}") from None
        exporter = export.Exporter(stub, metadata, dest)
        results, counts = run_parallel(exporter.export, photos, args.jobs, ("exported", "present", "failed"),
                                       "exporting", "photo")
    print(f"exported {counts['exported']}, already there {counts['present']}, failed {counts['failed']} "
          f"(into {dest})")
    for r in sorted((r for r in results if r.outcome == "failed"), key=lambda r: r.photo.filename):
        print(f"  failed: {r.photo.name} ({r.photo.filename}): {r.reason}")
    return 1 if counts["failed"] else 0


# reindex

def cmd_reindex(args, settings: Settings) -> int:
    metadata = bearer_metadata(_api_key(args))
    target = settings.target("ingest")
    with make_channel(target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            # Watch first: every status change after the call is seen, however fast the worker is.
            stream = stub.WatchPhotos(ingest_pb2.WatchPhotosRequest(), metadata=metadata,
                                      timeout=args.wait_timeout)
            stream.initial_metadata()
            response = stub.ReindexPhotos(ingest_pb2.ReindexPhotosRequest(all=args.all),
                                          metadata=metadata, timeout=60)
        except grpc.RpcError as e:
            raise _rpc_failure(e, target) from e
        try:
            if not response.names:
                print(f"every photo is indexed with the current models ({', '.join(response.models)})")
                return 0
            print(f"queued {len(response.names)} photo(s) for {', '.join(response.models)}")
            pending = set(response.names)
            try:
                failed, _ = follow_until_done(stream, pending, total=len(pending), desc="reindexing")
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise CliError(f"photos not all reindexed after {args.wait_timeout:g}s") from e
                raise _rpc_failure(e, target) from e
        finally:
            stream.cancel()
    if pending:
        raise CliError(f"the watch ended with {len(pending)} photo(s) not reindexed yet")
    print(f"reindexed {len(response.names) - len(failed)}, failed {len(failed)}")
    for name, reason in failed:
        print(f"  not reindexed: {name}: {reason}")
    return 1 if failed else 0


# status

def _model_line(info: embed_pb2.GetModelInfoResponse) -> str:
    """One line per model (role, id, state)."""
    lines = []
    for m in info.models:
        state = "ready" if m.ready else f"not ready: {m.reason}"
        size = f" (dim {m.dimension})" if m.ready and m.dimension else ""
        lines.append(f"model {role_name(m.role):<8} {m.model}{size}: {state}")
    return "\n".join(lines) + f"\ndevice: {info.device}"


def cmd_status(args, settings: Settings) -> int:
    metadata = bearer_metadata(_api_key(args))
    ingest_target, embed_target = settings.target("ingest"), settings.target("embed")
    with make_channel(ingest_target) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        try:
            totals = {status: stub.ListPhotos(ingest_pb2.ListPhotosRequest(page_size=1, status=status),
                                              metadata=metadata, timeout=30).total_size
                      for status in STATUS_LABELS}
        except grpc.RpcError as e:
            raise _rpc_failure(e, ingest_target) from e
    print(f"photos: {totals[photo_pb2.PHOTO_STATUS_UNSPECIFIED]} (" + ", ".join(
        f"{label} {totals[status]}" for status, label in STATUS_LABELS.items() if label) + ")")
    with make_channel(embed_target) as channel:
        try:
            info = embed_pb2_grpc.EmbedServiceStub(channel).GetModelInfo(
                embed_pb2.GetModelInfoRequest(), metadata=metadata, timeout=30)
        except grpc.RpcError as e:
            raise _rpc_failure(e, embed_target) from e
    print(_model_line(info))
    if args.backends:
        for line in _backend_lines(settings):
            print(line)
        for line in _lag_lines(settings):
            print(line)
    return 0


def _backend_lines(settings: Settings) -> list[str]:
    """Each port's backend and address (asks the engines; needs their settings)."""
    lines = ["backends:"]
    for port, opener in (("blobs", open_blobs), ("metadata", open_metadata), ("events", open_events),
                         ("vectors", open_vectors)):
        try:
            backend = opener(settings)
            lines.append(f"  {port:<9} {backend.describe()}")
            backend.close()
        except Exception as e:  # noqa: BLE001 - status reports what it cannot reach
            lines.append(f"  {port:<9} {getattr(settings, port).backend}: unreachable: {e}")
    return lines


def _lag_lines(settings: Settings) -> list[str]:
    """Records each consumer group has not committed yet, per partition."""
    from embed_svc.worker import STAGES
    from ingest_svc.server import STATUS_GROUP
    from photostore.backends.base import TOPIC_PHOTO_STATUS
    lines = ["consumer lag:"]
    try:
        events = open_events(settings)
        groups = [(stage.group, stage.topic) for stage in STAGES.values()] + [(STATUS_GROUP, TOPIC_PHOTO_STATUS)]
        for group, topic in groups:
            lag = events.lag(group, [topic])
            parts = "  ".join(f"[{tp.partition}] {n}" for tp, n in sorted(lag.items()))
            lines.append(f"  {group:<14} {topic:<16} total {sum(lag.values())}:  {parts}")
        events.close()
    except Exception as e:  # noqa: BLE001
        lines.append(f"  unreachable: {e}")
    return lines


# up

class _StartupInterrupted(Exception):
    """A child exited, or we were asked to stop, before every service answered."""


def _wait_until(probe, children: Sequence[tuple[str, subprocess.Popen]], stop: threading.Event,
                timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Retries `probe` until it passes; gives up at once if a child exits or a signal came."""
    deadline = time.monotonic() + timeout_s
    while True:
        if stop.is_set():
            raise _StartupInterrupted("stopped by signal")
        for label, proc in children:
            if proc.poll() is not None:
                raise _StartupInterrupted(f"{label} exited with status {proc.returncode}")
        try:
            probe()
            return
        except Exception:  # noqa: BLE001 - not yet; the last failure is reported at the deadline
            if time.monotonic() > deadline:
                raise
        stop.wait(0.25)


def _die_with_parent() -> Callable[[], None] | None:
    """A Popen preexec_fn (Linux) that has the kernel send the child SIGTERM when `up` ends, even
    by SIGKILL (PR_SET_PDEATHSIG; kept across the exec into the service, which stops gracefully
    on it). The "parent" is the thread that forked: `up` starts every child from its main thread."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # up ended before the line above took effect
            os.kill(os.getpid(), sigterm)
    return preexec


@dataclasses.dataclass
class _Supervised:
    label: str
    argv: list[str]
    env: dict[str, str]
    probe: Callable[[], None] | None  # passes once the process serves
    backoff_s: float  # the delay before its next restart
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restart_at: float | None = None  # exited; started again at this time.monotonic()
    recovering: bool = False  # started again, its probe not passed yet


class Supervisor:
    """Runs the service processes and keeps them running: `check` (called every half second or
    so) starts again a process that exited, after a delay that doubles from backoff_s up to
    max_backoff_s with each exit and starts over once the process stayed up stable_s. Every
    child is in a process group of its own (a terminal's Ctrl-C reaches only `up`, which stops
    them) and gets SIGTERM from the kernel when `up` ends, however it ends."""

    def __init__(self, *, backoff_s: float = RESTART_BACKOFF_S, max_backoff_s: float = RESTART_BACKOFF_MAX_S,
                 stable_s: float = RESTART_STABLE_S, say: Callable[[str], None] | None = None):
        self.backoff_s, self.max_backoff_s, self.stable_s = backoff_s, max_backoff_s, stable_s
        self._say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._preexec = _die_with_parent()
        self.children: list[_Supervised] = []

    def start(self, label: str, argv: list[str], env: dict[str, str],
              probe: Callable[[], None] | None = None) -> subprocess.Popen:
        child = _Supervised(label, argv, env, probe, self.backoff_s)
        self.children.append(child)
        self._spawn(child)
        return child.proc

    def _spawn(self, child: _Supervised) -> None:
        child.proc = subprocess.Popen(child.argv, env=child.env, process_group=0, preexec_fn=self._preexec)
        child.started = time.monotonic()

    @property
    def running(self) -> list[tuple[str, subprocess.Popen]]:
        return [(c.label, c.proc) for c in self.children if c.proc is not None]

    def check(self) -> None:
        """Notices exits (and says when each process starts again), starts those whose delay is
        over, and says when a restarted one serves again."""
        for child in self.children:
            now = time.monotonic()
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    self._spawn(child)
                    child.recovering = child.probe is not None
                    self._say(f"{child.label} started again (pid {child.proc.pid})")
                continue
            code = child.proc.poll()
            if code is None:
                if child.recovering:
                    try:
                        child.probe()
                    except Exception:  # noqa: BLE001 - still starting: asked again next time
                        continue
                    child.recovering = False
                    self._say(f"{child.label} is serving again")
                continue
            if now - child.started >= self.stable_s:
                child.backoff_s = self.backoff_s
            delay, child.backoff_s = child.backoff_s, min(child.backoff_s * 2, self.max_backoff_s)
            child.restart_at, child.recovering = now + delay, False
            self._say(f"{child.label} exited with code {code}; restarting in {delay:g} s")

    def stop(self, grace_s: float) -> None:
        """SIGTERM to every running child at once; those still running after grace_s are killed."""
        children = [(c.label, c.proc) for c in self.children if c.proc is not None]
        for child in self.children:
            child.restart_at = None
        _stop_children(children, grace_s)


def _up_lock(data_dir: Path) -> int:
    """Takes DATA_DIR/up.lock (flock) for as long as this process lives, which the kernel ends
    however the process ends; raises CliError naming the `up` that holds it. Returns the fd."""
    path = data_dir / UP_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CliError(f"another `photostore up` (pid {holder}) runs on the data dir {data_dir}; "
                       "stop it first, or give this one another PHOTOSTORE_DATA_DIR") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a bind without SO_REUSEPORT fails, also beside
    the gRPC servers, which set it)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # the service itself says what is wrong with the host
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return True
    return False


def _port_holder(port: int) -> str:
    """"pid N (command line)" of the process listening on `port`, where /proc shows it; else ""."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir() if sockets else ():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in sockets for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"pid {proc.name} ({command.strip()[:200]})"
    return ""


def _check_ports(processes: Sequence[deployment.ServiceProcess], settings: Settings) -> None:
    """Raises CliError, before anything starts, when a port a process would listen on is taken
    (or given twice), naming the port, its setting and the process that holds it."""
    problems, given = [], {}
    for process in processes:
        for name, port in process.ports(settings).items():
            base = getattr(settings, name.removeprefix("PHOTOSTORE_").lower())
            setting = name if port == base else f"{name} + {port - base}"
            what = f"port {port} of {process.label} ({setting})"
            if port in given:
                problems.append(f"{what} is also {given[port]}")
                continue
            given[port] = what
            if _port_in_use(settings.host, port):
                holder = _port_holder(port)
                problems.append(f"{what} is in use on {settings.host}" + (f" by {holder}" if holder else ""))
    if problems:
        raise CliError("; ".join(problems) + ": stop what holds it, or set another port")


def _grpc_health_probe(target: str, service: str = "", timeout_s: float = 2.0):
    def probe():
        with make_channel(target) as channel:  # TLS where the settings say so
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            state = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            raise RuntimeError(f"{target} {service or 'server'} is {state}")
    return probe


def _http_health_probe(url: str, timeout_s: float = 2.0):
    def probe():
        requests.get(url, timeout=timeout_s).raise_for_status()
    return probe


# serve, probe: what the container image runs

def cmd_serve(args, settings: Settings) -> int:
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        # OpenBLAS's threads spin after each call and took the cores from the model runtimes'
        # own threads (query encoding 2.5x slower); the services' numpy work is small. The
        # variable covers BLAS libraries loaded later, threadpool_limits those loaded already.
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        threadpool_limits(1, user_api="blas")
    module = importlib.import_module(deployment.SERVICE_MODULES[args.component])
    if args.component == "worker":
        module.main(args.options)
    elif args.options:
        raise CliError(f"`serve {args.component}` takes no options: {' '.join(args.options)}")
    else:
        module.main()
    return 0


def cmd_probe(args, settings: Settings) -> int:
    """Exit status 0 when the server answers SERVING (gRPC) or 2xx (HTTP): a container health check."""
    probe = (_grpc_health_probe(args.grpc, args.service, args.timeout) if args.grpc
             else _http_health_probe(args.http, args.timeout))
    try:
        probe()
    except (grpc.RpcError, requests.RequestException, RuntimeError) as e:
        reason = f"{e.code().name}: {e.details()}" if isinstance(e, grpc.RpcError) else str(e)
        print(f"not ready: {reason}", file=sys.stderr)
        return 1
    return 0


def _stop_children(children: Sequence[tuple[str, subprocess.Popen]], grace_s: float) -> None:
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for label, proc in children:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{label} did not stop in {grace_s:g}s; killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def _start_engines(engines_dir: Path, stop: threading.Event) -> None:
    """Installs (first run: minutes) and starts the four engines; raises CliError if they fail."""
    for command in (["install"], ["start", str(engines_dir)]):
        print(f"engines: {command[0]} ...", flush=True)
        proc = subprocess.Popen(["bash", str(deployment.ENGINES_SCRIPT), *command], process_group=0,
                                env={**os.environ, **deployment.engines_env()})
        while proc.poll() is None:
            if stop.wait(0.5):
                proc.terminate()
                proc.wait()
                raise CliError("stopped while the engines were starting")
        if proc.returncode != 0:
            raise CliError(f"the engines did not {command[0]} (exit {proc.returncode}); "
                           f"logs in {engines_dir}/*/*.log")


def _stop_engines(engines_dir: Path) -> None:
    print("stopping the engines", file=sys.stderr)
    subprocess.run(["bash", str(deployment.ENGINES_SCRIPT), "stop", str(engines_dir)], check=False)


def cmd_up(args, settings: Settings) -> int:
    """Refuses to start beside another `up` on the data dir or on a taken port; else runs the
    services (restarting any that exits) until SIGTERM or SIGINT, then stops them."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        lock = _up_lock(settings.data_dir)
        try:
            _check_ports(deployment.services(settings, replicas=2 if args.scale_out else 1), settings)
            return _run_up(args, settings, stop)
        finally:
            os.close(lock)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _run_up(args, settings: Settings, stop: threading.Event) -> int:
    env_file = settings.data_dir / SCALE_OUT_ENV_FILE
    engines_dir = settings.data_dir / "engines"
    env_file.unlink(missing_ok=True)
    if args.scale_out:
        try:
            _start_engines(engines_dir, stop)
        except CliError:
            _stop_engines(engines_dir)
            raise
        backends = deployment.scale_out_env(settings)
        os.environ.update(backends)
        settings = Settings()
        # Later commands in other terminals (users add, status, ...) read the same settings.
        env_file.write_text("".join(f"{k}={v}\n" for k, v in backends.items()))
        env_file.chmod(0o600)
    processes = deployment.services(settings, replicas=2 if args.scale_out else 1)
    # A person reads this terminal: no line per request, unless asked for.
    env = {"PHOTOSTORE_ACCESS_LOG": "false", **os.environ}
    supervisor = Supervisor()
    try:
        for process in processes:
            probe = (_grpc_health_probe(process.grpc_target, timeout_s=1.0) if process.grpc_target
                     else _http_health_probe(process.http_url + "/readyz", timeout_s=1.0) if process.http_url
                     else None)
            supervisor.start(process.label, process.argv(sys.executable), {**env, **process.env}, probe)
        for process in processes:
            if process.grpc_target:
                _wait_until(_grpc_health_probe(process.grpc_target), supervisor.running, stop)
            elif process.http_url:
                _wait_until(_http_health_probe(process.http_url + "/readyz"), supervisor.running, stop)
        for process in processes:
            where = process.grpc_target or process.http_url or "(no port: consumes events)"
            print(f"{process.label:<14} {where}")
        if args.scale_out:
            for line in _backend_lines(settings):
                print(line)
            print(f"settings for other terminals are in {env_file} (read by this CLI)")
        sys.stdout.flush()
    except _StartupInterrupted as e:
        print(f"{e} during start-up; stopping the others", file=sys.stderr)
        exit_code = 0 if stop.is_set() else 1
    except Exception as e:  # noqa: BLE001 - a probe that never passed
        print(f"error: services did not come up in {STARTUP_TIMEOUT_S:g}s: {e}", file=sys.stderr)
        exit_code = 1
    else:
        exit_code = 0
        model_line = _model_status(settings, stop)
        if stop.is_set():
            print("stopped by signal during start-up; stopping the others", file=sys.stderr)
        else:
            print(model_line)
            print(f"data in {settings.data_dir}")
            print("create a user with: photostore users add NAME")
            sys.stdout.flush()
        # Started: from now on a service that exits is started again (before, it ended `up`).
        while not stop.wait(0.5):
            supervisor.check()
    supervisor.stop(settings.shutdown_grace_seconds + 5)
    if args.scale_out:
        _stop_engines(engines_dir)
        env_file.unlink(missing_ok=True)
    return exit_code


def _model_status(settings: Settings, stop: threading.Event) -> str:
    """The model's state, after giving it MODEL_WAIT_S to finish loading (less when `stop` is set)."""
    key = service_api_key(settings)
    with make_channel(settings.target("embed")) as channel:
        stub = embed_pb2_grpc.EmbedServiceStub(channel)

        @retry(retry=retry_if_result(lambda info: not all(m.ready for m in info.models)),
               stop=stop_after_delay(MODEL_WAIT_S) | stop_when_event_set(stop), sleep=stop.wait,
               wait=wait_fixed(0.5), retry_error_callback=lambda state: state.outcome.result())
        def model_info() -> embed_pb2.GetModelInfoResponse:
            return stub.GetModelInfo(embed_pb2.GetModelInfoRequest(), metadata=bearer_metadata(key),
                                     timeout=5)

        try:
            return _model_line(model_info())
        except grpc.RpcError as e:
            return f"model: unknown ({e.code().name}: {e.details()})"


# argument parsing

def _add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help=f"API key (default: ${API_KEY_ENV})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="photostore", description="Self-hosted photo storage with semantic search.",
        epilog="Services are found at PHOTOSTORE_HOST/PHOTOSTORE_*_PORT or PHOTOSTORE_*_TARGET.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="run every service on this machine until Ctrl-C",
        description="Runs the services on the embedded backends; with --scale-out, first installs "
                    "and starts Kafka, Weaviate, MongoDB-wire and S3 servers under DATA_DIR/engines "
                    "and runs two ingest replicas and two embed workers against them.")
    up.add_argument("--scale-out", action="store_true",
                    help="run on the real engines, with replicas (first run installs them: minutes)")
    up.set_defaults(handler=cmd_up)

    users = commands.add_parser("users", help="manage users")
    users_commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    users_add = users_commands.add_parser("add", help="create a user and print its API key")
    users_add.add_argument("name")
    users_add.set_defaults(handler=cmd_users_add)
    users_key = users_commands.add_parser(
        "key", help="issue a new API key; revoke the user's old keys and end its sessions",
        description="Prints a new API key for NAME. Its older keys stop working and its browser "
                    "sessions end (signed-in pages must sign in again with the new key).")
    users_key.add_argument("name")
    users_key.set_defaults(handler=cmd_users_key)

    imp = commands.add_parser(
        "import", help="upload photos: files and folders (with their sub-folders)",
        description="Uploads the photos among PATHs and in their sub-folders. Files are recognised "
                    "by content (JPEG, PNG, WebP, GIF, HEIC); the others are skipped and reported by "
                    "reason: not a photo, too large for the upload limit (PHOTOSTORE_MAX_UPLOAD_BYTES), "
                    "unreadable, hidden or system file (.DS_Store, Thumbs.db, ._* AppleDouble, dot "
                    "folders). Reruns are idempotent: photos already stored count as already there.",
        epilog="Exit status: 0 when every photo was stored (or already was), whatever was skipped; "
               "1 when any upload failed or the server refused a file (each is listed with its reason).")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--recursive", "-r", action=argparse.BooleanOptionalAction, default=True,
                     help="look into sub-folders (default; --no-recursive: only the folders named)")
    imp.add_argument("--verbose", "-v", action="store_true",
                     help="list every skipped file (default: the first 20 of each reason)")
    imp.add_argument("--jobs", "-j", type=int, default=4, help="parallel uploads (default 4)")
    imp.add_argument("--wait", action="store_true", help="then wait until the photos are indexed")
    imp.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                     help="give up waiting after this long (default: no limit)")
    _add_key_option(imp)
    imp.set_defaults(handler=cmd_import)

    exp = commands.add_parser(
        "export", help="download originals into a folder",
        description="Downloads the originals of a search, an album or every photo into DEST under "
                    "their uploaded file names (\"name (2).jpg\" for a second photo of a name; existing "
                    "files are never overwritten). Each download is checked against its sha256. A rerun "
                    "skips the photos already in DEST with the same bytes, so an interrupted export "
                    "resumes.",
        epilog="Exit status: 1 when any photo could not be exported (each is listed with its reason).")
    exp.add_argument("dest", metavar="DEST")
    what = exp.add_mutually_exclusive_group(required=True)
    what.add_argument("--query", "-q", metavar="Q", help="the hits of this search, as `search` finds them")
    what.add_argument("--album", "-a", metavar="ALBUM", help="an album: its title or albums/{id}")
    what.add_argument("--all", action="store_true", help="every photo (not those in the trash)")
    exp.add_argument("--limit", "-n", type=int, default=None, help="with --query: at most this many hits")
    exp.add_argument("--min-score", type=float, default=None,
                     help="with --query: leave out hits below this probability of relevance (0-1; default: "
                          "the calibrated cut-off)")
    exp.add_argument("--jobs", "-j", type=int, default=4, help="parallel downloads (default 4)")
    _add_key_option(exp)
    exp.set_defaults(handler=cmd_export)

    duplicates = commands.add_parser(
        "duplicates", help="list groups of photos that look alike (re-saved, resized, slightly edited)")
    _add_key_option(duplicates)
    duplicates.set_defaults(handler=cmd_duplicates)

    search = commands.add_parser("search", help="find photos by a text description")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--limit", "-n", type=int, default=10, help="number of results (default 10)")
    search.add_argument("--min-score", type=float, default=None,
                        help="leave out hits below this probability of relevance (0-1; default: the calibrated cut-off)")
    _add_key_option(search)
    search.set_defaults(handler=cmd_search)

    reindex = commands.add_parser(
        "reindex", help="embed photos again with the current models",
        description="Queues your photos whose vectors come from an older or missing model (every photo "
                    "with --all) and follows their progress; they stay searchable meanwhile.",
        epilog="Exit status: 1 when any photo failed to index.")
    reindex.add_argument("--all", action="store_true",
                         help="every photo, whatever its models; also those still waiting to be indexed")
    reindex.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                         help="give up waiting after this long (default: no limit)")
    _add_key_option(reindex)
    reindex.set_defaults(handler=cmd_reindex)

    serve = commands.add_parser(
        "serve", help="run one service in the foreground (what the container image runs)",
        description="Runs one service until SIGTERM, with the settings of the environment "
                    "(PHOTOSTORE_*); `photostore up` runs them all on this machine.")
    serve.add_argument("component", choices=list(deployment.SERVICE_MODULES))
    serve.add_argument("options", nargs=argparse.REMAINDER,
                       help="options of the service (worker: --once stops when the backlog is empty)")
    serve.set_defaults(handler=cmd_serve)

    probe = commands.add_parser(
        "probe", help="exit 0 when a service answers healthy (container health checks)")
    target = probe.add_mutually_exclusive_group(required=True)
    target.add_argument("--grpc", metavar="HOST:PORT", help="ask grpc.health.v1 at this address")
    target.add_argument("--http", metavar="URL", help="GET this URL, healthy on 2xx")
    probe.add_argument("--service", default="", help="gRPC service name to ask about (default: the server)")
    probe.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    probe.set_defaults(handler=cmd_probe)

    status = commands.add_parser("status", help="photo counts per status and model state")
    status.add_argument("--no-backends", dest="backends", action="store_false",
                        help="leave out each port's backend and the consumer lag per partition "
                             "(they need the engines' settings, as the services have them)")
    _add_key_option(status)
    status.set_defaults(handler=cmd_status)

    from photostore import cli_albums  # delete, trash, albums
    cli_albums.add_commands(commands)
    return parser


def load_running_stack_settings() -> None:
    """Settings of a stack that `up --scale-out` runs on this data dir (its engines), unless the
    environment chooses backends itself."""
    env_file = get_settings().data_dir / SCALE_OUT_ENV_FILE
    chosen = any(k.startswith(tuple(f"PHOTOSTORE_{p.upper()}__" for p in PORTS)) for k in os.environ)
    if env_file.exists() and not chosen:
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.startswith("PHOTOSTORE_"):
                os.environ.setdefault(name, value)
        get_settings.cache_clear()


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # what it writes (users, keys, the stack's settings) is its owner's alone
    args = build_parser().parse_args(argv)
    if args.command not in ("serve", "probe"):  # a service reads only its environment
        load_running_stack_settings()
    try:
        return args.handler(args, get_settings())
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
