"""cli.progress: a bar on a terminal, a few readable lines anywhere else."""

from __future__ import annotations

import io
import re

from cli.progress import Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Log(io.StringIO):
    """A non-terminal stream that remembers when each line was written."""

    def __init__(self, clock: FakeClock, tty: bool = False) -> None:
        super().__init__()
        self.clock, self.tty = clock, tty
        self.times: list[float] = []

    def write(self, s: str) -> int:
        if s.endswith("\n"):
            self.times.append(self.clock.now)
        return super().write(s)

    def isatty(self) -> bool:
        return self.tty


def lines(log: Log) -> list[str]:
    return log.getvalue().splitlines()


def test_plain_lines_are_few_and_say_done_rate_and_eta() -> None:
    clock = FakeClock()
    log = Log(clock)
    p = Progress(1000, unit="img-step", desc="render", stream=log, clock=clock)
    assert p.mode == "lines"
    for _ in range(1000):  # 100 s in all
        clock.now += 0.1
        p.update(1)
    p.close()
    out = lines(log)
    # every 5 s or 10 %, never two within 2 s: about 20 lines plus the last, not 1000
    assert 5 <= len(out) <= 100 / 2 + 1
    assert all(b - a >= 2.0 for a, b in zip(log.times, log.times[1:]))
    for line in out[:-1]:
        assert re.search(r"^render: \d+/1000 img-steps \(\d+%\), [\d.]+ img-step/s, ETA \w+$", line), line
    assert out[-1] == "render: complete: 1000/1000 img-steps in 1m40s (10 img-step/s)"
    assert "\r" not in log.getvalue()


def test_a_burst_of_updates_prints_at_most_one_line_per_interval() -> None:
    clock = FakeClock()
    log = Log(clock)
    p = Progress(1000, stream=log, clock=clock, unit="unit")
    for _ in range(1000):  # all in 1.5 s: every 10 % passes, but within the minimum interval
        clock.now += 0.0015
        p.update(1)
    p.close()
    assert lines(log) == ["complete: 1000/1000 units in 2s (667 unit/s)"]


def test_a_stall_still_prints_every_few_seconds_with_an_unknown_eta() -> None:
    clock = FakeClock()
    log = Log(clock)
    p = Progress(4, unit="unit", desc="job x", stream=log, clock=clock, decimals=1)
    p.set_status("queued")
    for _ in range(60):  # 30 s of polls that see nothing done
        clock.now += 0.5
        p.set_done(0)
    assert lines(log) == ["job x: 0.0/4 units (0%), 0 unit/s, ETA ?; queued"] * 6
    p.set_status("cancelled")
    p.close()
    p.close()  # once
    assert lines(log)[-1] == "job x: stopped: 0.0/4 units (0%) after 30s (0 unit/s); cancelled"
    assert len(lines(log)) == 7


def test_what_was_done_before_following_does_not_count_towards_the_rate() -> None:
    clock = FakeClock()
    log = Log(clock)
    p = Progress(100, unit="unit", stream=log, clock=clock, initial=50)
    clock.now = 10.0
    p.set_done(60)
    assert p.rate() == 1.0
    assert lines(log) == ["60/100 units (60%), 1 unit/s, ETA 40s"]


def test_a_slow_rate_reads_as_seconds_each() -> None:
    clock = FakeClock()
    log = Log(clock)
    p = Progress(4, unit="unit", desc="job x", stream=log, clock=clock, decimals=1)
    clock.now = 76.0
    p.set_done(1)
    clock.now = 300.0
    p.set_done(4)
    p.close()
    assert lines(log) == [
        "job x: 1.0/4 units (25%), 76 s/unit, ETA 3m48s",
        "job x: complete: 4.0/4 units in 5m00s (75 s/unit)",
    ]


def test_a_terminal_gets_a_bar_and_quiet_gets_nothing() -> None:
    clock = FakeClock()
    tty = Log(clock, tty=True)
    bar = Progress(10, unit="render", desc="fetch", stream=tty)
    assert bar.mode == "bar"
    bar.update(10)
    bar.close()
    assert "fetch: 100%" in tty.getvalue() and "10/10 renders" in tty.getvalue()

    assert Progress(10, stream=Log(clock, tty=True), tty=False).mode == "lines"  # the override wins
    assert Progress(10, stream=Log(clock), tty=True).mode == "bar"

    silent = Log(clock)
    quiet = Progress(10, stream=silent, disable=True, clock=clock)
    clock.now = 100.0
    quiet.update(5)
    quiet.close()
    assert quiet.mode == "off" and silent.getvalue() == ""


def test_a_total_that_shrinks_to_nothing_prints_nothing() -> None:
    """`render` where every unit is already rendered: no steps, no line."""
    clock = FakeClock()
    log = Log(clock)
    p = Progress(6, unit="img-step", stream=log, clock=clock)
    p.set_total(0)
    p.close()
    assert log.getvalue() == ""
