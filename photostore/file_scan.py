"""Which files `photostore import` uploads, and why it skips the others.

Files are recognised by their first bytes (the same sniffing as the blob store), never by their
extension alone: a text file named .jpg is skipped, a JPEG named .bin is uploaded. The server still
decodes every upload; this only spares the network what it would refuse anyway.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterable

from photostore.backends.local_blobs import SNIFF_BYTES, sniff_content_type

# What the ingest service stores (ingest_svc/imaging.py decodes these).
UPLOADABLE_TYPES = {"image/jpeg", "image/png", "image/webp", "image/gif", "image/heic"}
# Files operating systems and photo apps leave beside photos (AppleDouble `._*` and other dot
# files are caught as hidden).
SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r", ".ds_store"}
# Folders of thumbnails and metadata that NAS boxes and apps keep beside photos.
SYSTEM_FOLDERS = {"@eadir", "$recycle.bin", "system volume information", "__macosx"}

# Skip reasons, in the order the report lists them.
NOT_A_PHOTO = "not a photo (JPEG, PNG, WebP, GIF or HEIC, by content)"
TOO_LARGE = "too large for the upload limit"
UNREADABLE = "unreadable"
HIDDEN = "hidden or system file"
REASONS = (NOT_A_PHOTO, TOO_LARGE, UNREADABLE, HIDDEN)


@dataclasses.dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str  # one of REASONS
    detail: str = ""  # e.g. the OS error, or the size


@dataclasses.dataclass
class Scan:
    files: list[Path] = dataclasses.field(default_factory=list)  # to upload, sorted
    skipped: list[Skipped] = dataclasses.field(default_factory=list)


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _hidden_folder(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def classify(path: Path, max_bytes: int) -> Skipped | None:
    """None when `path` should be uploaded; else why not."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        return Skipped(path, UNREADABLE, e.strerror or str(e))
    if sniff_content_type(head) not in UPLOADABLE_TYPES:
        return Skipped(path, NOT_A_PHOTO)
    if size > max_bytes:
        return Skipped(path, TOO_LARGE, f"{size:,} bytes, limit {max_bytes:,}")
    return None


def _walk(folder: Path, recursive: bool, scan: Scan) -> Iterable[Path]:
    """The regular files under `folder` (symlinks to files included, symlinked folders not
    followed); hidden files and folders, and unreadable folders, go to scan.skipped."""
    def unreadable(error: OSError) -> None:
        scan.skipped.append(Skipped(Path(error.filename or folder), UNREADABLE, error.strerror or str(error)))

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        here = Path(root)
        if not recursive:
            dirs.clear()
        for name in sorted(dirs):
            if _hidden_folder(name):  # reported once, not file by file (a .git holds thousands)
                scan.skipped.append(Skipped(here / name, HIDDEN, "folder"))
                dirs.remove(name)
        for name in files:
            path = here / name
            if is_hidden(name):
                scan.skipped.append(Skipped(path, HIDDEN))
            elif path.is_file():
                yield path
            elif path.is_symlink() and not path.exists():
                scan.skipped.append(Skipped(path, UNREADABLE, "broken link"))
            else:  # a fifo or socket: never opened (reading a fifo would block)
                scan.skipped.append(Skipped(path, NOT_A_PHOTO, "not a regular file"))


def scan_paths(paths: Iterable[Path], *, recursive: bool, max_bytes: int,
               progress: Callable[[int], None] = lambda n: None) -> Scan:
    """Files named directly are taken whatever their name; folders are walked. Each file is
    listed once however often it is named. `progress(1)` is called per file looked at."""
    scan, seen = Scan(), set()
    for path in paths:
        candidates = _walk(path, recursive, scan) if path.is_dir() else [path]
        for candidate in candidates:
            key = candidate.resolve()
            if key in seen:
                continue
            seen.add(key)
            progress(1)
            skipped = classify(candidate, max_bytes)
            if skipped is None:
                scan.files.append(candidate)
            else:
                scan.skipped.append(skipped)
    scan.files.sort()
    return scan


def skip_report(skipped: list[Skipped], *, verbose: bool, names_per_reason: int = 20) -> list[str]:
    """Lines for the user: a count per reason, then its files (the first names_per_reason of
    each unless verbose)."""
    lines = []
    for reason in REASONS:
        these = sorted((s for s in skipped if s.reason == reason), key=lambda s: s.path)
        if not these:
            continue
        lines.append(f"  {reason}: {len(these)}")
        shown = these if verbose else these[:names_per_reason]
        lines += [f"    {s.path}" + (f" ({s.detail})" if s.detail else "") for s in shown]
        if len(shown) < len(these):
            lines.append(f"    ... and {len(these) - len(shown)} more (--verbose lists them all)")
    return lines
