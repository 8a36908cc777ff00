"""One process at a time per run folder (or sweep folder): an exclusive fcntl.flock on FOLDER/.l2vsd.lock,
held while the command works on the folder and released by the kernel when the process dies, so a
SIGKILL never leaves a stale lock behind. A second process gets one line naming the holder's pid.

The lock is re-entrant within a process (a sweep worker locks a run folder, then calls the run's own
entry point, which locks it again). Whoever takes the lock first also clears the temporaries a killed
process may have left: checkpoints/.tmp-*, .tmp-* next to any atomically written file, export/.partial-*."""
from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import time

from .config import ConfigError

LOCK_FILE = ".l2vsd.lock"
# Where atomic writes (checkpoint.atomic_write_bytes) and exports stage their files.
STALE_FILES = (".tmp-*", "checkpoints/.tmp-*", "eval/.tmp-*", "export/.tmp-*")
STALE_DIRS = ("export/.partial-*",)

_held: dict[str, "FolderLock"] = {}  # real path of the folder -> the lock this process holds


class FolderBusy(ConfigError):
    """Another process holds the folder's lock."""


def _holder_pid(path: str) -> str:
    # The holder writes its pid right after locking; give it a moment if we looked in between.
    for _ in range(20):
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                text = fh.read().strip()
        except OSError:
            text = ""
        if text.isdigit():
            return text
        time.sleep(0.05)
    return "unknown"


class FolderLock:
    def __init__(self, folder: str, flag: str):
        self.folder, self.flag = folder, flag
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd: int | None = None
        self.count = 0
        self.created_folder = False
        self.created_file = False

    def _acquire(self, wait: float) -> None:
        if not os.path.isdir(self.folder):
            try:
                os.makedirs(self.folder)
                self.created_folder = True
            except FileExistsError:
                pass
            except OSError as err:
                raise ConfigError(f"{self.flag}: cannot create '{self.folder}': {err.strerror}") from None
        deadline = time.monotonic() + wait
        while True:
            existed = os.path.exists(self.path)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ConfigError(f"{self.flag}: '{self.folder}' is not writable "
                                  f"(cannot create its lock file: {err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(f"{self.flag}: cannot lock '{self.path}': {err.strerror}") from None
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise FolderBusy(f"{self.flag}: '{self.folder}' is in use by process {_holder_pid(self.path)} "
                                 f"(it holds {self.path}); wait for it to finish or choose another folder") from None
            # The file may have been removed (discard) between our open and our lock: lock the one on disk.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            self.created_file = not existed
            return

    def release(self) -> None:
        self.count -= 1
        if self.count > 0:
            return
        _held.pop(os.path.realpath(self.folder), None)
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None

    def discard(self) -> None:
        """Releases the lock after a refused command: the lock file goes again when this lock made
        it, and so does the folder when this lock made it and nothing else was written into it."""
        if self.count == 1:
            try:
                if self.created_file:
                    os.unlink(self.path)  # still ours: a process that opened it meanwhile re-checks the inode
                if self.created_folder and not os.listdir(self.folder):
                    os.rmdir(self.folder)
            except OSError:
                pass
        self.release()

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folder(folder: str, flag: str = "--out", wait: float = 0.0, clean: bool = True) -> FolderLock:
    """The exclusive lock of `folder` (created if missing), or FolderBusy naming the holder's pid
    after `wait` seconds. Use as a context manager, or call release(). `clean`: remove stale
    temporaries once the lock is ours."""
    key = os.path.realpath(folder)
    lock = _held.get(key)
    if lock is None:
        lock = FolderLock(folder, flag)
        lock._acquire(wait)
        _held[key] = lock
        if clean:
            remove_stale_temporaries(folder)
    lock.count += 1
    return lock


def holds_lock(folder: str) -> bool:
    return os.path.realpath(folder) in _held


def remove_stale_temporaries(folder: str) -> list[str]:
    """Removes what a killed process left mid-write (only under the folder's lock: no live writer
    can own them). Returns the paths removed."""
    removed = []
    for pattern in STALE_FILES:
        for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
            if os.path.isfile(path) or os.path.islink(path):
                try:
                    os.unlink(path)
                    removed.append(path)
                except OSError:
                    pass
    for pattern in STALE_DIRS:
        for path in glob.glob(os.path.join(glob.escape(folder), pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
