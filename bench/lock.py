"""One run per run folder: an exclusive advisory lock held for the whole `equibench run`.

Two runs on the same ``--out`` would both append every job's rows to the store. The lock is an `fcntl.flock`
on ``<out>/.equibench.lock``; the kernel releases it when the process dies (even by SIGKILL), so a stale lock
file never blocks a later `--resume`. The file records who holds it, for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from bench.errors import UsageError
from bench.schema import LOCK_FILE


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"process {info.get('pid', '?')} on {info.get('host', '?')} (since {started})"


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock; UsageError (exit 2) naming the holder when another run has it."""
    path = Path(out_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fh: IO[str] = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{out_dir} is in use by {_holder(path)}: another equibench run writes there; wait "
                             "for it to finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock

