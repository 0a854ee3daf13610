"""One writer per folder: an exclusive `fcntl.flock` on a lock file inside it, held while a run,
a training or a sweep writes there. A second process asking for the same folder is refused at
once, with one line naming the holder (its pid, host, what it runs and since when, which the
holder writes into the lock file). The kernel drops the lock when the holder ends, however it ends
(SIGKILL included), so a dead holder never blocks the next writer.

    lock = FolderLock.acquire(folder, "checkpoint_dir", holder="train run 'cpu-seed0'")
    ...
    lock.release()          # or `with FolderLock.acquire(...):`
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from bindexp.errors import InputError

LOCK_FILE = ".bindexp.lock"  # inside the folder it guards


class FolderBusyError(InputError):
    """Another process holds the folder's lock (the message names it)."""


class FolderLock:
    """An exclusive lock on `<folder>/<name>` (see the module doc)."""

    def __init__(self, path: Path, handle: Any):
        self.path, self._handle = path, handle

    @classmethod
    def acquire(cls, folder: str | Path, what: str, holder: str, name: str = LOCK_FILE) -> FolderLock:
        """Lock `folder` (made if missing) for this process; FolderBusyError when another holds it.
        `what` names the folder in the refusal (e.g. `checkpoint_dir`), `holder` says what this
        process runs there (written into the lock file for the next one to read)."""
        import fcntl

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise FolderBusyError(f"{what} {folder} is in use by {describe_holder(path)}; wait for it to end "
                                  f"or choose another {what}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "holder": holder,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        handle.flush()
        return cls(path, handle)

    def release(self) -> None:
        """Drop the lock (closing the file does); the lock file stays, empty of meaning."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(path: Path) -> str:
    """`another process (pid 12, host h, train run 'x', since ...)` from the lock file, as far as it says."""
    try:
        info = json.loads(Path(path).read_text().strip() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or not info:
        return "another process"
    parts = [f"pid {info.get('pid')}", f"host {info.get('host')}", str(info.get("holder") or ""),
             f"since {info.get('since')}"]
    return f"another process ({', '.join(p for p in parts if p)})"
