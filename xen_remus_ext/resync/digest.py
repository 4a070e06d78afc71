"""Keyed block digests negotiated by the resync protocol.

``xxh3-128``: xxHash's XXH3 128-bit with a 64-bit per-session seed (fast,
~25 GB/s; the seed is secret to the two ends, so a guest writing its disk
cannot aim at collisions).  ``hmac-sha256``: HMAC-SHA256 keyed with the
session key, the strong choice (~1.4 GB/s).  Both are available on 2.7 and 3.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import hmac
import struct

from xen_remus_ext.errors import ProtocolError

try:
    import xxhash
except ImportError:  # pragma: no cover - a dependency; only the strong hash then
    xxhash = None

FAST = "xxh3-128"
STRONG = "hmac-sha256"


def available():
    """Digest names this end can compute, preferred first."""
    return ([FAST] if xxhash is not None and hasattr(xxhash, "xxh3_128_digest") else []) + [STRONG]


def digest_size(name):
    return {FAST: 16, STRONG: 32}[name]


def make(name, key):
    """:returns: a function ``bytes-like -> digest bytes`` keyed by ``key`` (bytes >= 8)."""
    if name == FAST:
        if FAST not in available():
            raise ProtocolError("digest %s: expected to be available on this end, xxhash missing" % name)
        seed = struct.unpack("!Q", key[:8])[0]
        fn = xxhash.xxh3_128_digest

        def fast(data):
            return fn(data, seed)
        return fast
    if name == STRONG:
        k = bytes(key)

        def strong(data):
            return hmac.new(k, data, hashlib.sha256).digest()
        return strong
    raise ProtocolError("digest: expected one of %s, got %r" % (", ".join(available()), name))
