"""Progress where it is read: a bar on a terminal, a plain line now and then
everywhere else.

A tqdm bar redraws itself with carriage returns several times a second. On a
terminal that is what a person wants; in a file, a pipe, a worker's log or CI
it becomes thousands of fragments glued into one unreadable "line". So where
the stream is not a terminal, `Progress` prints a plain line instead: every
`every_s` seconds or each `every_fraction` of the total, whichever comes
first, but never two within `min_interval_s`; each with done/total, rate and
ETA; and one final line when it is closed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Self, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm

Mode = Literal["bar", "lines", "off"]


class Progress:
    """Counts `done` out of `total` (units, renders, image-steps …).

    `tty` overrides what `stream.isatty()` says (tests; a caller that knows
    better); `clock` is injectable so a test can check the throttling without
    sleeping. `initial` is what was already done when following began (a job
    followed halfway): it counts as done but not towards the rate.
    """

    def __init__(
        self,
        total: float,
        *,
        unit: str = "item",
        desc: str = "",
        stream: TextIO | None = None,
        tty: bool | None = None,
        disable: bool = False,
        initial: float = 0,
        decimals: int = 0,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = 5.0,
        every_fraction: float = 0.1,
        min_interval_s: float = 2.0,
    ) -> None:
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.total, self.done, self.unit, self.desc, self.decimals = total, initial, unit, desc, decimals
        self.status = ""
        self.every_s, self.every_fraction, self.min_interval_s = every_s, every_fraction, min_interval_s
        self._clock = clock
        self._t0 = clock()
        self._initial = initial
        self._last_t = self._t0
        self._last_step = self._step_of(initial)
        self._closed = False
        self._bar: tqdm[None] | None = None
        if disable:
            self.mode: Mode = "off"
        elif tty if tty is not None else _isatty(self.stream):
            self.mode = "bar"
            self._bar = self._make_bar()
        else:
            self.mode = "lines"

    # -- what callers report ------------------------------------------------

    def update(self, n: float = 1) -> None:
        """`n` more done."""
        self.set_done(self.done + n)

    def set_done(self, done: float) -> None:
        """`done` in all (a job's status reports its progress as a whole)."""
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
        self.done = done
        self._maybe_line()

    def set_total(self, total: float) -> None:
        """The total changed (units found already rendered need no steps)."""
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set_status(self, text: str) -> None:
        """A short status shown after the counts (the bar's postfix)."""
        self.status = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def elapsed(self) -> float:
        return self._clock() - self._t0

    def close(self) -> None:
        """The bar's last frame, or the final line; once."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines" and (self.total > 0 or self.done > 0):
            self._write(self.final_line())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the plain lines ----------------------------------------------------

    def line(self) -> str:
        """One progress line: done/total, percent, rate, ETA, status."""
        rate = self.rate()
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        text = f"{self._prefix()}{self._counts()}{self._percent()}, {_rate(rate, self.unit)}, ETA {eta}"
        return text + (f"; {self.status}" if self.status else "")

    def final_line(self) -> str:
        if self.done >= self.total:
            head = f"complete: {self._counts()} in"
        else:
            head = f"stopped: {self._counts()}{self._percent()} after"
        text = f"{self._prefix()}{head} {_duration(self.elapsed())} ({_rate(self.rate(), self.unit)})"
        return text + (f"; {self.status}" if self.status else "")

    def rate(self) -> float:
        """Done per second since this progress began (what was done before it began does not count)."""
        seconds = self.elapsed()
        return (self.done - self._initial) / seconds if seconds > 0 else 0.0

    def _maybe_line(self) -> None:
        if self.mode != "lines" or self._closed or self.done >= self.total:
            return  # at the end `close` says it once
        now = self._clock()
        since = now - self._last_t
        if since < self.min_interval_s:
            return
        step = self._step_of(self.done)
        if since >= self.every_s or step > self._last_step:
            self._last_t, self._last_step = now, step
            self._write(self.line())

    def _step_of(self, done: float) -> int:
        """Which `every_fraction` of the total `done` has reached."""
        if self.total <= 0 or self.every_fraction <= 0:
            return 0
        return math.floor(done / self.total / self.every_fraction + 1e-9)

    def _prefix(self) -> str:
        return f"{self.desc}: " if self.desc else ""

    def _counts(self) -> str:
        total = f"{self.total:.0f}" if float(self.total).is_integer() else f"{self.total:.{self.decimals}f}"
        return f"{self.done:.{self.decimals}f}/{total} {self.unit}s"

    def _percent(self) -> str:
        return f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    # -- the bar --------------------------------------------------------------

    def _make_bar(self) -> tqdm[None]:
        from tqdm import tqdm  # only on a terminal: lines need none of it

        n = f"{{n:.{self.decimals}f}}" if self.decimals else "{n_fmt}"
        return tqdm(
            total=self.total,
            initial=self.done,
            unit=self.unit,
            desc=self.desc or None,
            file=self.stream,
            bar_format="{l_bar}{bar}| " + n + "/{total_fmt} {unit}s [{elapsed}<{remaining}, {rate_fmt}] {postfix}",
        )


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or stand-in stream
        return False


def _duration(seconds: float) -> str:
    """12s, 3m05s, 2h07m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _rate(rate: float, unit: str) -> str:
    """35.2 img-step/s, 1234 img-step/s; below one a second, seconds each
    (76.3 s/unit reads better than 0.0131 unit/s). Three significant digits."""
    if rate <= 0:
        return f"0 {unit}/s"
    if rate < 1:
        return f"{_digits(1 / rate)} s/{unit}"
    return f"{_digits(rate)} {unit}/s"


def _digits(x: float) -> str:
    return f"{x:.0f}" if x >= 1000 else f"{x:.3g}"
