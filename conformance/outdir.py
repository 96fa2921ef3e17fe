"""The `--out` folder of a run: probed before the first check, locked while the run lasts,
and written all at once at the end.

A run writes its case files and reports into a staging folder of its own (a unique
name inside `--out`), then moves them into place: `cases/` is replaced whole, so it holds
this run's cases only, and results.json goes last, so a reader who sees a new
results.json sees the reports and cases beside it that belong to it. A second run into
the same folder is refused while the first holds the lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK = ".adamconf.lock"


class OutDirError(Exception):
    """The folder cannot be used; the message names the problem and the fix."""


class OutDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self.staging: Path | None = None

    def open(self) -> OutDir:
        """Create and probe the folder, take its lock and make the staging folder."""
        p = self.path
        try:
            if p.exists() and not p.is_dir():
                raise OutDirError(f"--out {p} is a file, not a folder; choose a folder")
            p.mkdir(parents=True, exist_ok=True)
            fd = os.open(p / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutDirError(f"--out {p} cannot be created or written ({e.strerror}); choose a writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutDirError(f"another adamconf run is writing to {p}; wait for it to end or choose another --out") from None
        self._lock = fd
        try:
            self.staging = Path(tempfile.mkdtemp(prefix=".run-", dir=p))
            (self.staging / "cases").mkdir()
        except OSError as e:
            self.close()
            raise OutDirError(f"--out {p} cannot be written ({e.strerror}); choose a writable folder") from None
        return self

    @property
    def cases(self) -> Path:
        assert self.staging is not None
        return self.staging / "cases"

    def commit(self, files: dict[str, str]) -> None:
        """Move this run's cases and files into place; `results.json` last."""
        assert self.staging is not None
        for name, text in files.items():
            (self.staging / name).write_text(text)
        old = self.path / "cases"
        if old.exists():
            old.rename(self.staging / "cases.old")
        if any(self.cases.iterdir()):
            self.cases.rename(old)
        for name in sorted(files, key=lambda n: n == "results.json"):
            os.replace(self.staging / name, self.path / name)

    def close(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> OutDir:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
