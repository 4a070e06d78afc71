# -*- coding: utf-8 -*-
"""Bounds for evaluating an untrusted xm cfg: memory, time, regex work.

The AST evaluator (:mod:`.xm_cfg`) asks here BEFORE each operation that
could build a large value or run for long, so that nothing is allocated or
computed first and measured afterwards:

* :class:`Budget`: a deadline for the whole evaluation and an account of
  the bytes every operation creates (an estimate that errs high: 4 bytes a
  character, 8 a reference, 56 an object);
* :func:`text_bound` and :func:`format_bound`: how long ``str``/``repr``
  of a value, or a ``%`` format, could become, counted without building it
  (a list holding one string a thousand times counts it a thousand times);
* :func:`regex_work`: an upper bound on the backtracking work of a
  pattern on a string of a given length, from the parsed pattern: the
  number of ways it can split the string times the length of one way.
  Nested repeats (``(x+x+)+``) and stacked ones on a long string have an
  astronomic bound and are refused;
* :func:`cut`: a value for an error message, at most a line long.

Everything works on Python 2.7 and 3.
"""
from __future__ import absolute_import, division, print_function

import math
import re
import time

from xen_remus_ext.compat import integer_types, string_types

try:  # Python 3.11 and later
    from re import _constants as _sre_constants  # noqa: I001
    from re import _parser as _sre_parse
except ImportError:  # Python 2.7 to 3.10
    import sre_constants as _sre_constants
    import sre_parse as _sre_parse

#: the most characters of cfg text evaluated (real ones are a few KiB)
MAX_FILE_BYTES = 64 * 1024
#: the longest string, list or tuple one operation may build
MAX_SEQUENCE = 1 << 20
#: bytes (estimated) one operation may create
MAX_OP_BYTES = 16 << 20
#: bytes (estimated) a whole evaluation may create, freed or not
MAX_TOTAL_BYTES = 48 << 20
#: seconds a whole evaluation may take
MAX_SECONDS = 4.0
#: backtracking steps (upper bound) one regex call may need
MAX_REGEX_WORK = 10 ** 9
#: the longest regex pattern
MAX_PATTERN = 2000
#: digits of the longest decimal text ``int()`` converts (its cost grows
#: with the square of the length on older Pythons)
MAX_INT_DIGITS = 1000
#: substring search cost (needle x haystack) one call may need
MAX_SEARCH_WORK = 10 ** 8
#: characters of a value shown in an error message
MESSAGE_VALUE = 120

_STR_BYTES = 4      # UCS-4 on Python 2's wide builds; at most 4 in 3
_REF_BYTES = 8
_OBJ_BYTES = 56


class LimitError(ValueError):
    """An operation the limits refuse (reported as a ConfigError)."""


def cut(text, limit=MESSAGE_VALUE):
    """``text`` shortened to about ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return u"%s... (%d characters)" % (text[:limit], len(text))


class _Over(Exception):
    pass


def text_bound(value, limit, as_repr=False):
    """An upper bound on ``len(str(value))`` (``repr`` when ``as_repr``),
    or ``limit + 1`` as soon as it is known to exceed ``limit``.

    Strings in a container or in ``repr`` count 10 characters each (the
    longest escape, ``\\U0001f600``), plus quotes and a ``u`` prefix.
    """
    total = [0]
    active = set()

    def add(n):
        total[0] += n
        if total[0] > limit:
            raise _Over()

    def walk(v, rep):
        if isinstance(v, string_types):
            add(len(v) * 10 + 3 if rep else len(v))
        elif isinstance(v, bool) or v is None:
            add(5)
        elif isinstance(v, integer_types):
            add(v.bit_length() // 3 + 2)
        elif isinstance(v, float):
            add(330)   # '%f' % 1e308 is 316 characters; repr at most 24
        elif isinstance(v, (list, tuple, dict)):
            if id(v) in active:
                add(5)   # [...]
                return
            active.add(id(v))
            add(2 + 2 * len(v))
            items = v.items() if isinstance(v, dict) else ((x,) for x in v)
            for pair in items:
                for x in pair:
                    walk(x, True)
            active.discard(id(v))
        else:
            add(80)    # a module or a match object: '<... at 0x...>'

    try:
        walk(value, as_repr)
    except _Over:
        return limit + 1
    return total[0]


_CONVERSION = re.compile(u"%(?:\\(([^()]*)\\))?[-#0 +]*(\\*|[0-9]+)?(?:\\.(\\*|[0-9]*))?[hlL]?(.?)")


def format_bound(fmt, args, limit):
    """An upper bound on ``len(fmt % args)``, or ``limit + 1``.

    :raises LimitError: a ``*`` width or precision, a width of more than
        9 digits, or a ``%(`` key with parentheses inside (not estimated)
    """
    total = len(fmt)
    conversions = []
    for m in _CONVERSION.finditer(fmt):
        key, width, prec, conv = m.group(1), m.group(2), m.group(3), m.group(4)
        if conv == u"%" and key is None:
            continue
        if u"*" in (width, prec):
            raise LimitError("a %% format with a '*' width or precision is not supported: %s" % cut(fmt, 40))
        if fmt[m.start():m.start() + 2] == u"%(" and key is None:
            raise LimitError("a %% format key with parentheses in it is not supported: %s" % cut(fmt, 40))
        for num in (width, prec):
            if num and len(num) > 9:
                raise LimitError("a %% format with a huge width or precision: %s" % cut(fmt, 40))
        total += int(width or 0) + int(prec or 0)
        conversions.append((key, conv))
        if total > limit:
            return limit + 1
    if isinstance(args, tuple):
        values = list(args)
    elif isinstance(args, dict) and any(k is not None for k, _ in conversions):
        values = [args.get(k) if k is not None else args for k, _ in conversions]
    else:
        values = [args] * len(conversions)
    for i, v in enumerate(values):
        conv = conversions[i][1] if i < len(conversions) else u"s"
        total += text_bound(v, limit, as_repr=conv in (u"r", u"a")) if conv in (u"s", u"r", u"a") else 330
        if total > limit:
            return limit + 1
    return total


# -- regular expressions --------------------------------------------------

_CAP = 10 ** 15
_MAXREPEAT = getattr(_sre_constants, "MAXREPEAT", 65535)


def _op_name(op):
    return (getattr(op, "name", None) or str(op)).lower()


def _seq_cost(items, n):
    paths, steps = 1, 0
    for op, av in items:
        p, s = _node_cost(_op_name(op), av, n)
        paths = min(paths * p, _CAP)
        steps = min(steps + s, _CAP)
    return paths, max(steps, 1)


def _sub_items(sub):
    return getattr(sub, "data", sub)


def _node_cost(name, av, n):
    if name == "subpattern":
        return _seq_cost(_sub_items(av[-1]), n)
    if name == "atomic_group":
        return _seq_cost(_sub_items(av), n)
    if name in ("assert", "assert_not"):
        return _seq_cost(_sub_items(av[1]), n)
    if name == "branch":
        costs = [_seq_cost(_sub_items(b), n) for b in av[1]]
        return min(sum(c[0] for c in costs), _CAP), max(c[1] for c in costs)
    if name == "groupref_exists":
        costs = [_seq_cost(_sub_items(b), n) for b in av[1:] if b is not None]
        return min(sum(c[0] for c in costs), _CAP), max(c[1] for c in costs)
    if name == "groupref":
        return 1, n + 1
    if name in ("max_repeat", "min_repeat", "possessive_repeat"):
        lo, hi, sub = av
        p, s = _seq_cost(_sub_items(sub), n)
        top = n + 1 if hi >= _MAXREPEAT else hi
        top = max(top, lo)
        if p == 1:
            paths = top - lo + 1
        elif top * math.log(p) > math.log(_CAP):
            paths = _CAP
        else:
            paths = min(2 * p ** top, _CAP)
        return paths, min(s * top + 1, _CAP)
    return 1, 1


def regex_work(pattern, flags, n, search):
    """An upper bound on the steps ``re`` may take matching ``pattern``
    against a string of ``n`` characters (at every position if ``search``).

    :raises LimitError: a pattern longer than :data:`MAX_PATTERN`
    :raises re.error: a pattern that does not compile
    """
    if len(pattern) > MAX_PATTERN:
        raise LimitError("a regular expression of %d characters: more than %d" % (len(pattern), MAX_PATTERN))
    parsed = _sre_parse.parse(pattern, flags)
    paths, steps = _seq_cost(_sub_items(parsed), n)
    work = paths * steps * ((n + 1) if search else 1)
    return min(work, _CAP)


def check_regex(fname, pattern, flags, n, search):
    """:raises LimitError: the regex could take too long on ``n`` characters."""
    work = regex_work(pattern, flags, n, search)
    if work > MAX_REGEX_WORK:
        raise LimitError("re.%s(): the pattern %s could take too long on a string of %d characters "
                         "(nested or stacked repeats backtrack; simplify the pattern)"
                         % (fname, cut(repr(pattern).lstrip("u"), 60), n))


def search_work(needle_len, hay_len):
    """Worst-case cost of a substring search (older Pythons: the product)."""
    if needle_len <= 1:
        return hay_len
    return needle_len * max(hay_len - needle_len + 1, 0)


# -- the budget -------------------------------------------------------------

def new_bytes(value, fresh_items=False):
    """Estimated bytes ``value`` occupies that did not exist before;
    ``fresh_items``: the elements of a list or tuple are new too (as
    ``split`` makes them)."""
    if isinstance(value, string_types):
        return _OBJ_BYTES + _STR_BYTES * len(value)
    if isinstance(value, (list, tuple)):
        size = _OBJ_BYTES + _REF_BYTES * len(value)
        if fresh_items:
            for v in value:
                size += new_bytes(v, fresh_items=True)
        return size
    if isinstance(value, dict):
        return _OBJ_BYTES + 4 * _REF_BYTES * len(value)
    return _OBJ_BYTES


class Budget(object):
    """The time and memory one evaluation may still use."""

    def __init__(self, seconds=None, total_bytes=MAX_TOTAL_BYTES, clock=time.time):
        seconds = MAX_SECONDS if seconds is None else seconds
        self.clock = clock
        self.deadline = clock() + seconds
        self.seconds = seconds
        self.left = total_bytes
        self.total = total_bytes

    def tick(self):
        """:raises LimitError: past the deadline."""
        if self.clock() > self.deadline:
            raise LimitError("evaluating the cfg took more than %g s" % self.seconds)

    def ensure(self, nbytes, what):
        """Before building something of about ``nbytes``.

        :raises LimitError: more than one operation or the rest of the
            evaluation may create
        """
        if nbytes > MAX_OP_BYTES:
            raise LimitError("%s would take about %d MiB: more than %d MiB"
                             % (what, nbytes >> 20, MAX_OP_BYTES >> 20))
        if nbytes > self.left:
            raise LimitError("%s: the cfg has built more than %d MiB of values"
                             % (what, self.total >> 20))

    def charge(self, nbytes):
        self.left -= nbytes
        if self.left < 0:
            raise LimitError("the cfg has built more than %d MiB of values" % (self.total >> 20))
