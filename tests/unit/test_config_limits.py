# -*- coding: utf-8 -*-
"""The xm cfg evaluator's bounds: memory, time and regex work are refused
BEFORE they are spent, with a ConfigError naming the file and the line.

Hostile cfgs run in a child process so that a bound that fails cannot take
this machine's memory; the child reports each outcome and its peak RSS.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import resource
import subprocess
import sys
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xen_remus_ext import config
from xen_remus_ext.config import check as check_mod
from xen_remus_ext.config import limits, xm_cfg
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError

UNAME = (u"Linux", u"h", u"4.19.0-amd64", u"#1", u"x86_64")
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ev(text):
    return xm_cfg.evaluate(text, path="h.cfg", uname=UNAME)


# what the review found, each with the line it must be reported on
HOSTILE = [
    ("pct-width", u"x = '%(a)900000000s' % {'a': 'x'}\n", 1, "could build more than"),
    ("pct-list", u"s = 'x' * 1000000\nl = [s] * 1000\nx = '%s' % (l,)\n", 3, "could build more than"),
    ("re-sub", u"import re\nx = re.sub('', 'a' * 1000, 'b' * 1000000)\n", 2, "re.sub() could build"),
    ("pct-repeat", u"f = '%999999d' * 1000\nx = f % ((1,) * 1000)\n", 2, "could build more than"),
    ("re-nested", u"import re\nx = re.search('(x+x+)+y', 'x' * 5000)\n", 2, "could take too long"),
    ("re-stacked", u"import re\n\nx = re.search('x*x*x*x*y', 'x' * 3000)\n", 3, "could take too long"),
    ("re-empty-loop", u"import re\nx = re.match('(?:(?:){65535}){65535}', '')\n", 2, "could take too long"),
    ("join-str", u"x = ('x' * 1000).join('y' * 1000000)\n", 1, "join() of"),
    ("extend-doubling", u"a = [1]\n" + u"a.extend(a)\n" * 30, 22, "more than"),
    ("concat-loop", u"a = 'x' * 1000000\n" + u"b = a + 'y'\n" * 40, 13, "more than 48 MiB"),
    ("split-many", u"a = 'x ' * 500000\nb = a.split()\n", 2, "split() would take"),
    ("in-huge-list", u"s = 'x' * 1000000\nl = [s] * 1000000\nt = 'x' * 999999 + 'y'\nz = t in l\n", 4,
     "comparison"),
    ("nested-compare", u"s = 'x' * 1000000\na = [[[s] * 1000] * 1000] * 1000\nb = [[['x' * 1000000] * 1000]"
     u" * 1000] * 1000\nx = a == b\n", 4, "comparison"),
    ("range", u"x = range(100000000)\n", 1, "range() of"),
    ("int-digits", u"x = int('9' * 200000)\n", 1, "int() of a text"),
    ("long-literal", u"\nx = " + u"9" * 5000 + u"\n", 2, "a number of 5000 digits"),
    ("find-loop", u"s = 'a' * 1000000\nn = 'a' * 99 + 'b'\n" + u"m = s.find(n)\n" * 3000, None, "took more than"),
    ("big-file", u"# " + u"x" * (70 * 1024) + u"\n", None, "more than 65536"),
]

_CHILD = r"""
import json, signal, sys, time
signal.alarm(600)   # a bound that fails must not hang the suite
sys.path.insert(0, %(top)r)
from xen_remus_ext.config import limits, xm_cfg
from xen_remus_ext.errors import ConfigError
out = {}
for name, text in json.loads(sys.stdin.read()):
    # on a loaded machine the deadline could pass before the bound a case is
    # about: only the deadline case keeps the real one
    limits.MAX_SECONDS = 4.0 if name == "find-loop" else 600.0
    t = time.time()
    try:
        xm_cfg.evaluate(text, path="h.cfg", uname=("Linux", "h", "", "", "x86_64"))
        out[name] = ["ok", None, "", time.time() - t]
    except ConfigError as exc:
        out[name] = ["error", exc.line, exc.reason, time.time() - t]
# the peak of this process's own memory: VmHWM starts afresh at exec, while
# getrusage's ru_maxrss carries the forking parent's peak across it
with open("/proc/self/status") as f:
    out["rss_mb"] = [int(l.split()[1]) // 1024 for l in f if l.startswith("VmHWM:")][0]
print(json.dumps(out))
"""


def _child_limits():
    # a failing bound must not take the machine: 1.5 GiB of address space at most
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))


def test_hostile_cfgs_are_refused_with_file_and_line_in_bounded_memory():
    cases = [(name, text) for name, text, _line, _needle in HOSTILE]
    proc = subprocess.Popen([sys.executable, "-c", _CHILD % {"top": TOP}], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, preexec_fn=_child_limits)
    out, _ = proc.communicate(json.dumps(cases).encode("utf-8"))
    assert proc.returncode == 0
    got = json.loads(out.decode("utf-8"))
    for name, _text, line, needle in HOSTILE:
        kind, got_line, reason, seconds = got[name]
        assert kind == "error", name
        assert needle in reason, (name, reason)
        assert "MemoryError" not in reason, (name, reason)
        assert len(reason) < 400, (name, reason)
        if line is not None:
            assert got_line == line, (name, got_line, reason)
        # a hang guard, not a speed claim
        assert seconds < 120, (name, seconds)
    # all of the above in one process; the cfgs asked for many GiB
    assert got["rss_mb"] < 150, got["rss_mb"]


def test_reason_names_the_file_and_line():
    with pytest.raises(ConfigError) as exc:
        ev(u"name = 'a'\nx = ('x' * 1000).join('y' * 1000000)\n")
    assert str(exc.value).startswith("h.cfg:2: error: ")


def test_error_messages_cut_values():
    with pytest.raises(ConfigError) as exc:
        ev(u"k = 'k' * 1000000\nx = {}[k]\n")
    assert exc.value.line == 2 and "KeyError" in exc.value.reason
    assert len(exc.value.reason) < 400
    with pytest.raises(ConfigError) as exc:
        xm_cfg.parse(u"s = 'x' * 1000000\nmemory = [s] * 1000\n", path="m.cfg", uname=UNAME)
    assert "memory: expected an integer" in exc.value.reason and len(exc.value.reason) < 400


def test_config_files_beyond_the_cap_are_not_read(tmp_path):
    big = tmp_path / "big.cfg"
    big.write_bytes(b"# padding\n" * (config.MAX_FILE_BYTES // 10 + 10))
    with pytest.raises(ConfigError) as exc:
        config.load(str(big))
    assert exc.value.path == str(big) and "larger than" in exc.value.reason
    diags = check_mod.check_file(str(big))
    assert [d.severity for d in diags] == ["error"] and "larger than" in diags[0].message


@pytest.mark.parametrize("text,value", [
    (u"import re\nm = re.search(r'(\\d+)\\.(\\d+)', os.uname()[2])\nv = int(m.group(1))\n", 4),
    (u"import re\nv = re.match(r'(\\d{1,3}\\.){3}\\d{1,3}$', '10.0.0.1') is not None\nv = int(v)\n", 1),
    (u"v = len('-'.join(['ab'] * 1000))\n", 2999),
    (u"v = len('%s-%s' % ('a' * 1000, 'b'))\n", 1002),
    (u"v = len('%-20s|' % 'x')\n", 21),
    (u"v = len(('x' * 1000).replace('x', 'yy'))\n", 2000),
    (u"v = ['a', 'b'].index('b')\n", 1),
    (u"import re\nv = len(re.findall('A', 'a-A', re.I))\n", 2),
    (u"import re\nv = re.split(',', 'a,b,c', 1)[1]\n", u"b,c"),
    (u"import re\nv = re.sub('(a)', '\\\\1\\\\1', 'xax')\n", u"xaax"),
])
def test_ordinary_cfg_idioms_still_work(text, value):
    assert ev(text).options["v"] == value


def test_format_bound_counts_without_building():
    assert limits.format_bound(u"%s", (u"x" * 10,), 100) >= 10
    assert limits.format_bound(u"%(a)s" * 1000, {u"a": u"x" * 1000}, 1 << 20) > 10 ** 6 - 1
    assert limits.format_bound(u"%r", ([u"x" * 100] * 10,), 10 ** 6) >= 1000
    with pytest.raises(limits.LimitError):
        limits.format_bound(u"%*d", (5, 1), 100)
    with pytest.raises(limits.LimitError):
        limits.format_bound(u"%1234567890d", (1,), 100)


def test_text_bound_stops_early_and_survives_cycles():
    a = [1]
    a.append(a)
    assert limits.text_bound(a, 1000) < 100
    deep = [[[u"x" * 1000] * 1000] * 1000] * 1000
    assert limits.text_bound(deep, 10 ** 6) == 10 ** 6 + 1


@pytest.mark.parametrize("pattern,n,search,ok", [
    (u"(x+x+)+y", 50, True, False), (u"(a|aa)*b", 40, False, False), (u"(.*)*z", 20, False, False),
    (u"^tap2?:remus:([^:|]+):([0-9]+)", 60, False, True), (u"(\\d+)\\.(\\d+)", 64, True, True),
    (u"x*y", 100000, True, False),
])
def test_regex_work_refuses_backtracking_patterns(pattern, n, search, ok):
    assert (limits.regex_work(pattern, 0, n, search) <= limits.MAX_REGEX_WORK) is ok


def test_q_cuts_long_and_cyclic_values():
    assert q(u"x" * 1000).endswith(u"... (1000 characters)") and len(q(u"x" * 1000)) < 160
    a = [u"a"]
    a.append(a)
    assert q(a) == u"['a', [...]]"
    assert len(q([[u"y" * 500] * 500] * 500)) < 200
    assert q(u"abc") == u"'abc'" and q((u"a",)) == u"('a',)"


@contextmanager
def _address_space_cap(extra):
    """Cap this process's address space at its current size + ``extra``, so
    that a bound that fails raises MemoryError here instead of eating RAM."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    cur = pages * resource.getpagesize()
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cur + extra, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


_SIZES = st.sampled_from([0, 1, 7, 1000, 65536, 1000000, 10 ** 9])
_PATTERNS = st.sampled_from([u"(x+x+)+y", u"(a|a)*b", u"x*x*x*y", u"(.*)\\1z", u"(?:(?:){99}){99}",
                             u"[0-9]+", u"", u"(x*)*", u"x{1,9}{1,9}y"])
_NAMES = st.sampled_from([u"a", u"b", u"c"])


@st.composite
def _hostile_line(draw):
    n, m = draw(_SIZES), draw(_SIZES)
    x, y = draw(_NAMES), draw(_NAMES)
    return draw(st.sampled_from([
        u"%s = 'x' * %d" % (x, n), u"%s = [%s] * %d" % (x, y, n), u"%s = %s + %s" % (x, y, y),
        u"%s = '%%%ds' %% (%s,)" % (x, n, y), u"%s = '%%r' * %d %% %s" % (x, min(n, 99), y),
        u"%s = re.search(%r, 'x' * %d)" % (x, draw(_PATTERNS), n),
        u"%s = re.sub(%r, %s, 'y' * %d)" % (x, draw(_PATTERNS), y, m),
        u"%s = %s.join(%s)" % (x, y, y), u"%s = %s.replace('x', %s)" % (x, y, y),
        u"%s = %s.split()" % (x, y), u"%s.extend(%s)" % (x, y), u"%s.append(%s)" % (x, y),
        u"%s = %s == %s" % (x, y, y), u"%s = %s in %s" % (x, y, y), u"%s = str(%s)" % (x, y),
        u"%s = list(%s)" % (x, y), u"%s = int(%s)" % (x, y), u"%s = %s[::-1]" % (x, y),
        u"%s = max(%s)" % (x, y), u"%s = range(%d)" % (x, n),
    ]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_hostile_line(), min_size=1, max_size=12))
def test_fuzz_hostile_programs_stay_bounded(lines):
    text = u"import re\na = 'x'\nb = ['y']\nc = 3\n" + u"\n".join(lines) + u"\n"
    with _address_space_cap(600 << 20):
        try:
            ev(text)
        except ConfigError as exc:
            assert exc.path == "h.cfg"
            assert "MemoryError" not in exc.reason, (text, exc.reason)
            assert len(exc.reason) < 400


_BIG = u"x" * 200000


@pytest.mark.parametrize("fmt,text", [
    ("sxp", u"(vm (image (%s)))" % _BIG), ("sxp", u"(vm (memory %s))" % _BIG),
    ("xl", u"memory = \"%s\"" % _BIG), ("xl", u"type = \"%s\"" % _BIG),
    ("xm", u"memory = 'x' * 1000000\n"), ("xm", u"builder = 'y' * 1000000\n"),
])
def test_every_format_cuts_huge_values_in_messages(fmt, text):
    with pytest.raises(ConfigError) as exc:
        config.parse_text(text, path="p.cfg", fmt=fmt, uname=UNAME)
    assert exc.value.path == "p.cfg" and len(str(exc.value)) < 400
