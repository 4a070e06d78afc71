"""A clock double for ``ports.Clock``: time moves only when slept through.

The runner's settle waits, retries and timeouts then cost no real seconds,
and a test can act at the N-th wait (``on_sleep(n)``: a migration the
toolstack finishes on its own, a lock an earlier pass lets go).
"""
from __future__ import absolute_import, division, print_function


class FakeClock(object):
    """:param tick: seconds each :meth:`now` adds (so that two readings differ)
    :param on_sleep: called with the number of waits so far after each one"""

    def __init__(self, start=1000.0, tick=0.001, on_sleep=None):
        self.t = float(start)
        self.tick = tick
        self.on_sleep = on_sleep
        self.sleeps = 0

    def now(self):
        self.t += self.tick
        return self.t

    def sleep(self, seconds):
        self.t += seconds
        self.sleeps += 1
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)
