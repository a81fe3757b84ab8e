"""A minimal progress line on stderr (the demo and [`iter_features`][lsdiffusion.iter_features]).

The library shows progress only when asked (``progress=True``); the
``lsdiffusion`` command asks. On a terminal the line is redrawn in place at
most ten times a second; elsewhere (a log file, CI) one line is written at the
start and at each tenth of the total, so logs stay short and show at once that
work began. A block left by an exception (Ctrl-C) ends an open terminal line,
so whatever is printed next starts on a line of its own.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from typing_extensions import Self

__all__ = ["Progress"]


class Progress:
    """Count work done and show it as ``desc: 3/6 studies (12 s)``.

    Args:
        total: the amount of work, or ``None`` when unknown (then only the count shows).
        desc: what is being done.
        unit: what is counted (plural).
        enabled: ``False`` writes nothing.
        stream: where to write; default ``sys.stderr``.

    Examples:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(4, "studies", "jobs", stream=out) as bar:
        ...     for _ in range(4):
        ...         bar.update()
        >>> print(out.getvalue())  # doctest: +ELLIPSIS
        studies: 0/4 jobs (0 s)
        studies: 1/4 jobs (... s)
        studies: 2/4 jobs (... s)
        studies: 3/4 jobs (... s)
        studies: 4/4 jobs (... s)
        <BLANKLINE>
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        *,
        enabled: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled
        self.count = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._start = time.perf_counter()
        self._drawn_at = -1.0
        self._next_tenth = 1
        self._closed = False
        self._line_open = False  # a terminal line drawn without its newline
        if enabled:
            self._draw()

    def update(self, n: int = 1) -> None:
        """Add ``n`` to the count and redraw if it is time to."""
        self.count += n
        if not self.enabled:
            return
        if self._tty:
            if time.perf_counter() - self._drawn_at >= 0.1:
                self._draw()
        elif self.total:
            tenth = self.count * 10 // self.total
            if tenth >= self._next_tenth and self.count < self.total:
                self._next_tenth = tenth + 1
                self._draw()

    def close(self) -> None:
        """Draw the final count (ending the line on a terminal); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self.enabled:
            self._draw(final=True)

    def abandon(self) -> None:
        """Stop without a final count: end an open terminal line; safe to call twice."""
        self._closed = True
        if self._line_open:
            self._line_open = False
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, final: bool = False) -> None:
        self._drawn_at = time.perf_counter()
        done = f"{self.count}/{self.total}" if self.total is not None else f"{self.count}"
        line = f"{self.desc}: {done} {self.unit} ({self._drawn_at - self._start:.0f} s)"
        if self._tty:
            self._line_open = not final  # before the write: a Ctrl-C may come in between
            self._stream.write(f"\r{line}" + ("\n" if final else ""))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self.abandon()
