"""Where uploads are received before they are checked and stored: a directory per ingest server
named by host and pid, so one starting next to others on a data dir removes only what dead
processes left."""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

PREFIX = "ingest-"
# Spool files of the single shared directory used before, left by a crash: gone after this long.
LOOSE_FILE_AGE_S = 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class Spool:
    def __init__(self, tmp_dir: Path):
        self._host = socket.gethostname()
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.removed = self._remove_orphans(tmp_dir)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self._host}-{os.getpid()}-", dir=tmp_dir))

    def file(self) -> IO[bytes]:
        """A new spool file, deleted when closed."""
        return tempfile.NamedTemporaryFile(dir=self.dir, prefix="upload-", suffix=".part")

    def _remove_orphans(self, tmp_dir: Path) -> int:
        """Removes the spools of this host's dead ingest processes (a crash, kill -9), and loose
        spool files older than LOOSE_FILE_AGE_S; returns how many files went."""
        removed = 0
        own = f"{PREFIX}{self._host}-"
        for path in tmp_dir.glob(f"{own}*"):
            pid = path.name.removeprefix(own).split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                removed += sum(1 for p in path.rglob("*") if p.is_file())
                shutil.rmtree(path, ignore_errors=True)
        for path in tmp_dir.glob("upload-*.part"):
            if time.time() - path.stat().st_mtime > LOOSE_FILE_AGE_S:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d upload spool files left by stopped ingest processes", removed)
        return removed

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
