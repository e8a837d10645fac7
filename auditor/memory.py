"""Resident memory while inferences run: a sampling thread reading /proc, plus the OS peak."""

from __future__ import annotations

import os
import resource
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def current_rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """ru_maxrss of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Samples RSS every `interval_s` on its own thread (reads /proc/self/statm, ~µs each;
    the timed thread spends its time in native code that releases the GIL)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (ms since start, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        self.samples.append(((time.monotonic() - self._start) * 1e3, current_rss_bytes()))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        # The window's first and last samples are taken here, so a timing loop shorter than
        # one interval still has its memory measured.
        self._start = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def summary(self) -> dict[str, float]:
        values = [b for _, b in self.samples] or [current_rss_bytes()]
        return {
            "rss_avg_bytes": float(sum(values) / len(values)),
            "rss_peak_bytes": float(max(values)),
            "rss_samples": len(self.samples),
            "ru_maxrss_bytes": float(peak_rss_bytes()),
        }
