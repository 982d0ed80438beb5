"""A run's stdout and stderr: whatever became of them, writing there never
ends a download and never raises.

- A pipe whose reader went away (``| head -1``): the write is dropped and
  ``on_closed_pipe`` is called; the run stops there, as SIGPIPE would have
  stopped a C program, quietly (see ``runs.Run.on_closed_pipe``).
- A stream closed from the start (``>&-``, ``2>&-``: Python makes it None)
  or one that fails otherwise (``> /dev/full``): its writes are dropped and
  the downloads go on.
- Text its encoding cannot hold (``PYTHONIOENCODING=ascii`` and a server's
  non-ASCII words in an error): replaced by '?', never fatal.

``guarded_streams`` puts such a stream in place of ``sys.stdout`` and
``sys.stderr`` for the length of a run, so ``print``, the variants'
``sys.stdout.write`` and tqdm all go through it, and then puts the
originals back. It writes to the original's raw file, never through the
original's buffer: no byte meant for a closed pipe waits there, to fail
again (and cost a traceback and exit status 120) when Python flushes it at
exit.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer


class GuardedRaw(io.RawIOBase):
    """The raw file under a guarded stream: every write succeeds, in full.

    ``raw`` None: the stream is gone (closed from the start, or since a
    write failed) and writes go nowhere.
    """

    def __init__(self, raw: io.RawIOBase | None, on_closed_pipe: Callable[[], None]) -> None:
        super().__init__()
        self.raw = raw
        self.on_closed_pipe = on_closed_pipe
        self.raw_name: object = getattr(raw, 'name', '<closed>')  # '<stdout>' for sys.stdout

    @property
    def name(self) -> object:
        """What TextIOWrapper.name shows: the original's."""
        return self.raw_name

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast('B')
        done = 0
        while self.raw is not None and done < len(view):
            try:
                written = self.raw.write(view[done:])
            except BrokenPipeError:  # the reader went away
                self.raw = None
                self.on_closed_pipe()
            except OSError:  # a full disk, a terminal gone: that output is lost
                self.raw = None
            else:
                if written is None:  # a non-blocking file that is full: drop the rest
                    break
                done += written
        return len(view)

    def fileno(self) -> int:
        if self.raw is None:
            return super().fileno()  # io.UnsupportedOperation
        return self.raw.fileno()

    def isatty(self) -> bool:
        return self.raw is not None and self.raw.isatty()


def guarded(stream: TextIO | None, on_closed_pipe: Callable[[], None]) -> TextIO | None:
    """A guarded stand-in for ``stream``, buffered as it is; None to leave
    ``stream`` as it is (a capture with no file under it, as pytest's)."""
    if stream is None:
        return io.TextIOWrapper(GuardedRaw(None, on_closed_pipe), encoding='utf-8',
                                errors='replace', write_through=True)
    if not isinstance(stream, io.TextIOWrapper):
        return None
    buffer = stream.buffer
    raw: io.RawIOBase
    if isinstance(buffer, io.BufferedWriter):
        raw = buffer.raw
    elif isinstance(buffer, io.RawIOBase):  # python -u, PYTHONUNBUFFERED
        raw = buffer
    else:
        return None
    guard = GuardedRaw(raw, on_closed_pipe)
    errors = 'replace' if stream.errors == 'strict' else stream.errors
    return io.TextIOWrapper(io.BufferedWriter(guard) if buffer is not raw else guard,
                            encoding=stream.encoding, errors=errors,
                            line_buffering=stream.line_buffering,
                            write_through=stream.write_through)


@contextlib.contextmanager
def guarded_streams(on_closed_pipe: Callable[[], None]) -> Iterator[None]:
    """Guarded sys.stdout and sys.stderr inside the block; the originals after it."""
    saved_out, saved_err = sys.stdout, sys.stderr
    out, err = guarded(saved_out, on_closed_pipe), guarded(saved_err, on_closed_pipe)
    for saved in (saved_out, saved_err):  # what was written before goes first
        if saved is not None:
            with contextlib.suppress(OSError, ValueError):  # broken, or closed
                saved.flush()
    if out is not None:
        sys.stdout = out
    if err is not None:
        sys.stderr = err
    try:
        yield
    finally:
        if out is not None:
            out.flush()
            if sys.stdout is out:
                sys.stdout = saved_out
        if err is not None:
            err.flush()
            if sys.stderr is err:
                sys.stderr = saved_err
