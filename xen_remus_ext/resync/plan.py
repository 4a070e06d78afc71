"""Pure range arithmetic for the resync engine (no I/O).

Everything here works on half-open byte intervals ``(start, end)`` kept as
sorted, non-overlapping lists, and on :class:`model.Extent`.  The engine uses
it to turn a dirty list, a disk size and a receiver journal into the work of
one session, and to cut that work into the chunks both ends walk in step.

The ``--dirty FILE`` format (documented in docs/protocol.md) is parsed here:
one extent a line, ``OFFSET LENGTH`` in bytes, decimal or ``0x`` hex, an
optional ``K``/``M``/``G``/``T`` suffix (powers of 1024); blank lines and
``#`` comments are ignored.
"""
from __future__ import absolute_import, division, print_function

import bisect

from xen_remus_ext.errors import ConfigError, ValidationError
from xen_remus_ext.model import Extent

#: bytes both ends read at a time (one digest message covers one chunk)
CHUNK = 1 << 20

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """``"64K"``, ``"1.5M"``, ``"0x1000"``, ``"4096"`` -> bytes (int).

    A fraction is allowed when the result is a whole number of bytes.

    :raises ValidationError: anything else.
    """
    s = str(text).strip().lower()
    if s.endswith("ib"):
        s = s[:-2]
    elif s.endswith("b") and len(s) > 1 and not s.startswith("0x"):
        s = s[:-1]
    mult = 1
    if s and s[-1] in _SUFFIX and not s.startswith("0x"):
        mult = _SUFFIX[s[-1]]
        s = s[:-1]
    whole, dot, frac = s.partition(".")
    try:
        if s.startswith("0x"):
            value = int(s, 16)
        elif dot:
            if not (whole or frac) or not (whole or "0").isdigit() or not (frac or "0").isdigit():
                raise ValueError(s)
            num, den = int((whole or "0") + frac) * mult, 10 ** len(frac)
            if num % den:
                raise ValidationError("size: expected a whole number of bytes, got %r" % (text,))
            value, mult = num // den, 1
        else:
            value = int(s, 10)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError("size: expected a number with optional K/M/G/T suffix, got %r" % (text,))
    if value < 0:
        raise ValidationError("size: expected a non-negative number, got %r" % (text,))
    return value * mult


def normalize(intervals):
    """Sort and merge ``(start, end)`` pairs; empty ones vanish."""
    out = []
    for start, end in sorted((int(a), int(b)) for a, b in intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract(intervals, holes):
    """``intervals`` minus ``holes`` (both lists of pairs; result normalized)."""
    holes = normalize(holes)
    out = []
    for start, end in normalize(intervals):
        cur = start
        for hs, he in holes:
            if he <= cur:
                continue
            if hs >= end:
                break
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
            if cur >= end:
                break
        if cur < end:
            out.append((cur, end))
    return out


def intersect(intervals, others):
    """What ``intervals`` and ``others`` share (both lists of pairs; result normalized)."""
    intervals = normalize(intervals)
    return subtract(intervals, subtract(intervals, others))


def covers(intervals, offset):
    """Whether ``offset`` lies in one of the normalized ``intervals``."""
    i = bisect.bisect_right(intervals, (offset, float("inf"))) - 1
    return i >= 0 and intervals[i][0] <= offset < intervals[i][1]


def merged_chunks(a, b, chunk=CHUNK):
    """:func:`chunks` of two disjoint interval lists, interleaved in offset
    order: each piece comes from one list, cut exactly as that list alone
    would be (so it matches a peer that walks only that list)."""
    x, y = chunks(a, chunk), chunks(b, chunk)
    p, q = next(x, None), next(y, None)
    while p is not None or q is not None:
        if q is None or (p is not None and p[0] < q[0]):
            yield p
            p = next(x, None)
        else:
            yield q
            q = next(y, None)


def total(intervals):
    return sum(end - start for start, end in intervals)


def extents_to_intervals(extents, size):
    """Validate extents against the disk size and return merged intervals.

    :raises ValidationError: an extent past the end of the disk.
    """
    pairs = []
    for ext in extents:
        if not isinstance(ext, Extent):
            ext = Extent(*ext)
        if ext.end > size:
            raise ValidationError("dirty extent %d+%d: expected to end within the disk (%d bytes), got end %d"
                                  % (ext.offset, ext.length, size, ext.end))
        pairs.append((ext.offset, ext.end))
    return normalize(pairs)


def intervals_to_extents(intervals):
    return [Extent(start, end - start) for start, end in normalize(intervals)]


def align_out(intervals, block, size):
    """Widen intervals to ``block`` boundaries (clamped to ``size``)."""
    return normalize((s - s % block, min(size, -(-e // block) * block)) for s, e in intervals)


def chunks(intervals, chunk=CHUNK):
    """Yield ``(offset, length)`` pieces of at most ``chunk`` bytes, in order.

    Pieces start at multiples of ``chunk`` where the interval allows, so both
    ends of a session cut the same work into the same pieces.
    """
    for start, end in intervals:
        cur = start
        while cur < end:
            nxt = min(end, (cur // chunk + 1) * chunk)
            yield cur, nxt - cur
            cur = nxt


def runs(flags):
    """Indices of True runs in a list of booleans -> ``[(first, count), ...]``."""
    out = []
    first = None
    for i, flag in enumerate(flags):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            out.append((first, i - first))
            first = None
    if first is not None:
        out.append((first, len(flags) - first))
    return out


def parse_dirty(text, size, path="<dirty>"):
    """Parse the ``--dirty FILE`` format into a list of :class:`Extent`.

    :raises ConfigError: a malformed line, naming the file and line.
    """
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.replace(",", " ").split()
        if len(fields) != 2:
            raise ConfigError(path, lineno, "expected 'OFFSET LENGTH', got %r" % (raw.strip(),))
        try:
            off, length = parse_size(fields[0]), parse_size(fields[1])
        except ValidationError as exc:
            raise ConfigError(path, lineno, str(exc))
        if off + length > size:
            raise ConfigError(path, lineno, "extent %d+%d: expected to end within the disk (%d bytes)"
                              % (off, length, size))
        out.append(Extent(off, length))
    return intervals_to_extents((e.offset, e.end) for e in out)


def format_dirty(extents):
    return "".join("%d %d\n" % (e.offset, e.length) for e in extents)
