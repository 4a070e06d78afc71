"""A token bucket (bytes per second), as DRBD's c-max-rate caps resync I/O."""
from __future__ import absolute_import, division, print_function

import threading
import time


class TokenBucket(object):
    """``consume(n)`` returns once ``n`` bytes fit under ``rate``.

    :param rate: bytes per second, or None/0 for no limit.
    :param burst: bucket depth in bytes (default: a tenth of a second, >= 1 MiB).
    """

    def __init__(self, rate, burst=None, clock=time.time, sleep=time.sleep):
        self.rate = float(rate) if rate else 0.0
        self.burst = float(burst if burst is not None else max(1 << 20, self.rate / 10))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def consume(self, n):
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
