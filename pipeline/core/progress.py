"""Progress for long loops: a tqdm bar on a terminal, periodic log lines elsewhere (DVC logs, CI)."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise (CI, DVC output in a log file) an INFO line on `logger`
    every ~10 % or 30 s, since a bar redrawn with carriage returns turns a log into one huge line. With
    `log_lines=False` nothing is logged off a terminal (for loops that log their own summary, like an epoch)."""

    LOG_EVERY_S = 30.0

    def __init__(self, total: int | None, *, desc: str, unit: str, enabled: bool = True, initial: int = 0,
                 logger: logging.Logger = log, log_lines: bool = True):
        self.total, self.desc, self.unit, self.n, self.logger = total, desc, unit, initial, logger
        self._bar = None
        self._log = enabled and log_lines and not sys.stderr.isatty()
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit == "B",
                             unit_divisor=1024, dynamic_ncols=True)
        self._start_n, self._start_t = initial, time.monotonic()
        self._logged_n, self._logged_t = initial, self._start_t

    def update(self, n: int) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._log:
            now = time.monotonic()
            step = self.total / 10 if self.total else float("inf")
            if self.n - self._logged_n >= step or now - self._logged_t >= self.LOG_EVERY_S:
                self._report(now)

    @property
    def on_terminal(self) -> bool:
        return self._bar is not None

    def set_postfix(self, **values: str) -> None:
        """Extra figures shown after the bar (e.g. the loss); only on a terminal."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._log and self.n != self._logged_n:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        """Like `1.50GB of 1.86GB (80%), 11.2MB/s, ETA 00:33` or `2331 of 5829 files (40%), 812 files/s, ...`."""
        def amount(count: float) -> str:
            return tqdm.format_sizeof(count, "B", 1024) if self.unit == "B" else f"{count:.0f}"

        unit = "" if self.unit == "B" else f" {self.unit}"
        rate = (self.n - self._start_n) / max(now - self._start_t, 1e-9)
        text = amount(self.n)
        if self.total:
            text += f" of {amount(self.total)}{unit} ({100 * self.n / self.total:.0f}%)"
        else:
            text += unit
        text += f", {amount(rate)}{unit}/s"
        if self.total and rate > 0:
            text += f", ETA {tqdm.format_interval((self.total - self.n) / rate)}"
        self.logger.info("%s: %s", self.desc, text)
        self._logged_n, self._logged_t = self.n, now
