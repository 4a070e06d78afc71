"""Fuzzing the config parsers (xm cfg, xl cfg, SXP, Xen-API XML) with hypothesis.

Contract: any input ends in a DomainConfig or one of the documented errors
(XenRemusError: ConfigError, ValidationError); never another exception, and
never a hang (each parse runs under a SIGALRM budget).  Inputs: random text,
byte-level mutations of the golden files in tests/data, and token soups
built from each format's own vocabulary.  Crashers found are pinned below
as regression cases.
"""
from __future__ import absolute_import, division, print_function

import os
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xen_remus_ext.config import parse_text
from xen_remus_ext.errors import XenRemusError

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
BUDGET_S = 20   # a hang never ends; 20 s tolerates a loaded 2-core machine
FMTS = ("xm", "xl", "sxp", "xml")
GOLDEN = {"xm": ["cfg/pv-remus.cfg", "cfg/hvm-remus.cfg", "cfg/remus-fu-hvm.cfg"],
          "xl": ["xlcfg/pv.cfg", "xlcfg/hvm-remus.cfg"],
          "sxp": ["sxp/hvmdomu-xm-list-l.sxp", "sxp/pv-vm-create.sxp"],
          "xml": ["xml/hvmdomu.xml"]}
VOCAB = {
    "xm": ["memory", "name", "disk", "vif", "vcpus", "=", " ", "\n", "'", '"', "[", "]", "(", ")", ",", "+", "%",
           "*", "**", "1e400", "-1", "0x10", "import os", "os.uname()", "re.search", "if", "else", ":", "tap2:remus:",
           "|aio:", "xvda", "w", "None", "True", "\\", "#", "'''", "9" * 30, "nan", "float('inf')", "[1]*"],
    "xl": ["memory", "name", "disk", "vif", "=", " ", "\n", '"', "'", "[", "]", ",", ";", "#", "\\", "\\u00",
           "\\x4", "0x", "077", "1e400", "-", "tap2:remus:host:9000|aio:/img", "vdev=xvda", "target=", "9" * 30],
    "sxp": ["(", ")", "vm", "domain", "device", "vbd", "vif", "uname", "memory", "name", " ", "'", '"', "\\",
            "1e400", "nan", "-5", "tap2:remus:::|aio:", "dev", "xvda:disk", "mode", "w", "9" * 30],
    "xml": ["<", ">", "</", "/>", "xm", "vm", "vbd", "name=", '"', "'", "&", "&amp;", "<!DOCTYPE", "<![CDATA[",
            "]]>", "<?xml version='1.0'?>", "memory", "static_max=", "1e400", "-1", "uname", "tap2:remus:::|aio:"],
}


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang()


def parse_or_documented_error(text, fmt):
    """:returns: "ok" or the error class name; raises anything else (and Hang)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(BUDGET_S)
    try:
        parse_text(text, path="<fuzz>", fmt=fmt)
        return "ok"
    except XenRemusError as exc:
        assert str(exc), "an error without a message"
        return type(exc).__name__
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _golden(fmt):
    out = []
    for rel in GOLDEN[fmt]:
        with open(os.path.join(DATA, rel), "rb") as f:
            out.append(f.read())
    return out


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("fmt", FMTS)
@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(fmt, text):
    parse_or_documented_error(text, fmt)


@pytest.mark.parametrize("fmt", FMTS)
@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(fmt, data):
    parse_or_documented_error(data, fmt)


@pytest.mark.parametrize("fmt", FMTS)
@FUZZ
@given(pieces=st.lists(st.one_of(st.sampled_from(VOCAB["xm"] + VOCAB["xl"] + VOCAB["sxp"] + VOCAB["xml"]),
                                 st.text(max_size=3)), max_size=60), own=st.booleans())
def test_token_soup(fmt, pieces, own):
    if own:
        pieces = [p for p in pieces if p in VOCAB[fmt]] or pieces
    parse_or_documented_error(u"".join(pieces), fmt)


@pytest.mark.parametrize("fmt", FMTS)
@FUZZ
@given(which=st.integers(0, 10), edits=st.lists(
    st.tuples(st.sampled_from(("delete", "insert", "replace", "duplicate")), st.floats(0, 1), st.floats(0, 1),
              st.binary(min_size=1, max_size=8)), min_size=1, max_size=6))
def test_mutated_golden_files(fmt, which, edits):
    files = _golden(fmt)
    data = bytearray(files[which % len(files)])
    for op, a, b, blob in edits:
        i = int(a * len(data))
        j = min(len(data), i + 1 + int(b * 64))
        if op == "delete":
            del data[i:j]
        elif op == "insert":
            data[i:i] = blob
        elif op == "replace":
            data[i:j] = blob
        else:
            data[i:i] = data[i:j] * 3
    parse_or_documented_error(bytes(data), fmt)


@pytest.mark.parametrize("fmt", FMTS)
def test_golden_files_still_parse(fmt):
    """The mutations start from inputs that parse (else the fuzz is vacuous)."""
    for data in _golden(fmt):
        assert parse_or_documented_error(data, fmt) == "ok"


# -- crashers found by the fuzzing, pinned ---------------------------------------
DEEP = 5000
CRASHERS = [
    ("xm", "memory = 1e400\n"),                       # OverflowError: float infinity to int
    ("xm", "memory = float('nan')\n"),
    ("xm", "memory = -1e400\n"),
    ("xl", "memory = 1e400\n"),
    ("sxp", "(vm (memory 1e400))"),                    # OverflowError in _int_value
    ("sxp", "(vm (memory nan))"),                      # ValueError: float NaN to integer
    ("sxp", "(vm (memory -inf) (name a))"),
    ("sxp", "(" * DEEP + ")" * DEEP),                  # RecursionError in the error message's repr
    ("sxp", "(vm " + "(" * DEEP + ")" * DEEP + ")"),
    ("xm", "a = " + "(" * DEEP + "1" + ")" * DEEP + "\n"),
    ("xm", "a = " + "-" * 100000 + "1\n"),
    ("xm", "a = 10**10**10\n"),
    ("xm", "a = 'x' * 10**10\n"),
    ("xm", "a = [1] * 10**10\n"),
    ("xm", "a = '%0999999999d' % 1\n"),
    ("xm", "a = 2 << 10**9\n"),
    ("xl", "a = " + "[" * DEEP + "]" * DEEP + "\n"),
    ("xml", "<!DOCTYPE x [<!ENTITY a 'xxxxxxxxxx'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
            "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>"
            "<!ENTITY e '&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;'><!ENTITY f '&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;'>]>"
            "<x>&f;&f;&f;&f;&f;&f;&f;&f;</x>"),       # billion laughs: bounded or refused, no hang
    ("xml", "<?xml version='1.0'?><!DOCTYPE x SYSTEM 'file:///etc/passwd'><x/>"),
]


@pytest.mark.parametrize("fmt,text", CRASHERS, ids=["%s-%d" % (c[0], i) for i, c in enumerate(CRASHERS)])
def test_crashers_found_by_fuzzing(fmt, text):
    assert parse_or_documented_error(text, fmt) in ("ok", "ConfigError", "ValidationError")
