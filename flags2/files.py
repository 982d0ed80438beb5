"""Writing a flag: whole or not at all, with the mode any new file would get.

A temporary file in the destination folder is renamed over the flag, so a
reader sees the old flag or the new one, never part of one; a reader that
holds the old file open keeps reading the old bytes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask.

    Reading the umask means setting it, which is not thread-safe: a run reads
    it once, before its threads start. (mkstemp makes 0600 files.)
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file with ``mode``; errors name ``path``."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                                        suffix='.part')
    except OSError as exc:  # name the flag, not the temporary file
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, 'wb') as tmp:
            os.chmod(tmp_name, mode)
            tmp.write(data)
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
