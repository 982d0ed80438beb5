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


def current_umask() -> int:
    """The process's umask. Reading it means setting it: call before threads start."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a flag gets what open() would give it. Read once,
# at import: os.umask is not thread-safe to read.
FILE_MODE = 0o666 & ~current_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file; errors name ``path``."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.',
                                        suffix='.part')
    except OSError as exc:  # name the flag, not the temporary file
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, 'wb') as tmp:
            os.chmod(tmp_name, FILE_MODE)
            tmp.write(data)
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
