# -*- coding: utf-8 -*-
"""config.xm_cfg: xm cfg files evaluated without running them.

xm itself (opts.py) cannot run here; the expectations follow docs/xen-facts.md
section 2: locals pre-seeded with sys/os/xm_file/xm_help/xm_vars, and only
str, list, int and float locals become options.  The --exec tests run the
cfg with Python's exec as xm does.
"""
from __future__ import absolute_import, division, print_function

import io
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext import config
from xen_remus_ext.config import xm_cfg
from xen_remus_ext.errors import ConfigError

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "cfg")
X86_64 = (u"Linux", u"dom0", u"2.6.32-5-xen-amd64", u"#1 SMP", u"x86_64")
I686 = (u"Linux", u"dom0", u"2.6.32-5-xen-686", u"#1 SMP", u"i686")


def data(name):
    return os.path.join(DATA, name)


def read(name):
    with io.open(data(name), encoding="utf-8", newline="") as f:
        return f.read()


def ev(text, **kw):
    return xm_cfg.evaluate(text, path="t.cfg", uname=kw.pop("uname", X86_64), **kw)


# -- the seed cfg -------------------------------------------------------------

def test_seed_fixed_cfg_golden_json():
    cfg = config.load(data("remus-fu-hvm.cfg"), uname=X86_64)
    with io.open(data("remus-fu-hvm.json"), encoding="utf-8") as f:
        assert cfg.to_dict() == json.load(f)
    assert cfg.format == "xm"
    assert cfg.options["device_model"] == u"/usr/lib64/xen/bin/qemu-dm"
    assert cfg.disks[0].line == 14


def test_seed_fixed_cfg_on_32_bit_dom0():
    cfg = config.load(data("remus-fu-hvm.cfg"), uname=I686)
    assert cfg.options["device_model"] == u"/usr/lib/xen/bin/qemu-dm"


def test_seed_fixed_differs_from_verbatim_only_in_quotes_and_indentation():
    verbatim, fixed = read("remus-fu-hvm-verbatim.cfg"), read("remus-fu-hvm.cfg")
    assert xm_cfg.asciify_quotes(verbatim).replace(u"\narch_libdir", u"\n    arch_libdir") == fixed


def test_seed_verbatim_load_names_line_3_and_the_quote():
    with pytest.raises(ConfigError) as exc:
        config.load(data("remus-fu-hvm-verbatim.cfg"))
    err = exc.value
    assert (err.line, err.column) == (3, 14)
    assert str(err).startswith(data("remus-fu-hvm-verbatim.cfg") + ":3:14: error: typographic quote")
    assert u"\u2019" in err.reason and u"U+2019 RIGHT SINGLE QUOTATION MARK" in err.reason
    assert u"column 14" in err.reason and u"ASCII quote '" in err.reason


def test_seed_verbatim_check_source_quotes_first_then_indentation():
    errs = xm_cfg.check_source(read("remus-fu-hvm-verbatim.cfg"), "v.cfg")
    assert [e.line for e in errs] == [3, 4, 6, 8, 9, 12, 16, 18, 23, 4]
    assert u"\u201c" in errs[3].reason and u'ASCII quote "' in errs[3].reason
    assert u"(and 3 more on this line)" in errs[6].reason
    assert errs[-1].reason.startswith("Python syntax: expected an indented block")
    assert "typographic quotes as ASCII" in errs[-1].reason


@pytest.mark.parametrize("ch,ascii_q", [(u"\u2018", u"'"), (u"\u2032", u"'"), (u"\u2033", u'"'),
                                        (u"\u201d", u'"')])
def test_each_typographic_quote_is_named(ch, ascii_q):
    with pytest.raises(ConfigError) as exc:
        ev(u"name = 1\nx = %sabc%s\n" % (ch, ch))
    assert exc.value.line == 2
    assert ch in exc.value.reason and (u"ASCII quote %s" % ascii_q) in exc.value.reason
    assert u"column 5" in exc.value.reason


# -- golden example cfgs ------------------------------------------------------

@pytest.mark.parametrize("name", ["pv-remus", "hvm-remus"])
def test_example_cfgs_golden_json(name):
    cfg = config.load(data(name + ".cfg"), uname=X86_64)
    with io.open(data(name + ".json"), encoding="utf-8") as f:
        assert cfg.to_dict() == json.load(f)


def test_pv_example_options_and_lines():
    cfg = config.load(data("pv-remus.cfg"), uname=I686)
    assert cfg.kernel == u"/boot/vmlinuz-2.6.32-5-xen-686"
    assert cfg.options["ramdisk"] == u"/boot/initrd.img-2.6.32-5-xen-686"
    assert cfg.options["backup"] == u"10.1.0.7"
    assert cfg.options["on_reboot"] == u"restart"
    assert [d.line for d in cfg.disks] == [39, 40]
    for seeded in ("os", "sys", "re", "xm_file", "xm_help", "xm_vars"):
        assert seeded not in cfg.options


# -- the evaluator's idioms -------------------------------------------------------

def test_xm_option_filter_exact_types():
    st_ = ev(u"a = 'x'\nb = [1]\nc = 2\nd = 2.5\ne = True\nf = None\ng = (1, 2)\nh = {'k': 1}\n")
    assert st_.options == {"a": u"x", "b": [1], "c": 2, "d": 2.5}


def test_idioms():
    text = u"\n".join([
        u"import os, re, sys",
        u"import os.path",
        u"base = os.path.join('/srv', 'xen')",
        u"img = os.path.basename('/a/b/c.img')",
        u"m = re.match(r'(\\d+)\\.(\\d+)', '4.1')",
        u"major = int(m.group(1)) if m else 0",
        u"if re.search('64', os.uname()[4]) and major >= 4:",
        u"    arch = 'x86_64'",
        u"elif sys.platform == 'linux2':",
        u"    arch = 'x86_32'",
        u"else:",
        u"    arch = 'other'",
        u"name = 'g%d-%s' % (major, arch)",
        u"disk = ['phy:/dev/vg/%s,xvda,w' % name]",
        u"disk.append(','.join(['file:' + base + '/' + img, 'xvdb', 'r']))",
        u"disk += ['phy:/dev/sdc,xvdc,w']",
        u"memory = 64 * 4 + 256 // 2 - 128",
        u"a, b = 'x y'.split()",
        u"vcpus = len(disk) - 1",
        u"extra = ' '.join(['console=hvc0', 'root=/dev/xvda1']).upper().lower()",
        u"kernel = '/boot/' + 'vmlinuz'.replace('vm', 'VM').strip()",
        u"pass",
        u"'''a docstring'''",
    ])
    st_ = ev(text)
    o = st_.options
    assert o["base"] == u"/srv/xen" and o["img"] == u"c.img"
    assert o["name"] == u"g4-x86_64"
    assert o["disk"] == [u"phy:/dev/vg/g4-x86_64,xvda,w", u"file:/srv/xen/c.img,xvdb,r", u"phy:/dev/sdc,xvdc,w"]
    assert o["memory"] == 256 and o["vcpus"] == 2
    assert (o["a"], o["b"]) == (u"x", u"y")
    assert o["extra"] == u"console=hvc0 root=/dev/xvda1"
    assert o["kernel"] == u"/boot/VMlinuz"
    assert st_.lines["disk"] == 16
    assert "m" not in o  # a match object is no option


def test_os_and_sys_are_preseeded_like_xm():
    st_ = ev(u"arch = os.uname()[4]\nsep = os.path.sep\nf = xm_file\n")
    assert st_.options == {"arch": u"x86_64", "sep": u"/", "f": u"t.cfg"}


def test_xm_vars_and_command_line_vars():
    st_ = ev(u"xm_vars.var('vmid', use='Domain number', check=int)\nxm_vars.check()\n"
             u"name = 'vm%s' % vmid\n", extra_vars={"vmid": u"3"})
    assert st_.options == {"name": u"vm3"}


def test_integer_division_floors_like_python2():
    assert ev(u"memory = 1025 / 2\n").options["memory"] == 512


@pytest.mark.parametrize("text,line,needle", [
    (u"name = 'x'\nfor i in [1]:\n    pass\n", 2, "a 'for' loop"),
    (u"def f():\n    return 1\n", 1, "a function definition"),
    (u"import subprocess\n", 1, "'import subprocess'"),
    (u"x = open('/etc/passwd').read()\n", 1, "name 'open' is not defined"),
    (u"x = os.system('true')\n", 1, "os.system"),
    (u"x = ''.__class__\n", 1, "the attribute .__class__"),
    (u"x = [i for i in []]\n", 1, "a list comprehension"),
    (u"x = lambda: 1\n", 1, "a lambda"),
    (u"while True:\n    pass\n", 1, "a 'while' loop"),
    (u"x = 2 ** 10\n", 1, "the operator Pow"),
    (u"from os import system\n", 1, "'from os import system'"),
    (u"x = y\n", 1, "name 'y' is not defined"),
    (u"\n\nx = 'a' + 1\n", 3, "cannot add"),
    (u"x = [1][5]\n", 1, "IndexError"),
    (u"x = 'a' * 10000000\n", 1, "more than"),
    (u"x = os.path.exists('/')\n", 1, "os.path.exists"),
    (u"a = ['x' * 1000] * 2000\nb = ''.join(a)\n", 2, "join() of 2000000 characters"),
    (u"a = 'x' * 1000\nb = a.replace('x', 'y' * 2000)\n", 2, "replace() could build"),
    (u"a = '%0999999999d' % 1\n", 1, "could build more than"),
    (u"a = '{0.__class__}'.format(1)\n", 1, "the attribute .format"),
    (u"a = 10 ** 2\n", 1, "the operator Pow"),
    (u"a = 4294967296 * 4294967296\na = a * a\na = a * a\na = a * a\n", 4, "bits"),
    (u"x = (1\n", None, "Python syntax"),
])
def test_unsupported_or_failing_constructs(text, line, needle):
    with pytest.raises(ConfigError) as exc:
        ev(text)
    assert needle in exc.value.reason
    if line is not None:
        assert exc.value.line == line
    assert exc.value.path == "t.cfg"


def test_unsupported_cfg_file_names_construct_and_exec_runs_it():
    with pytest.raises(ConfigError) as exc:
        config.load(data("unsupported.cfg"))
    assert exc.value.line == 5 and "a 'for' loop" in exc.value.reason and "--exec" in exc.value.reason
    cfg = config.load(data("unsupported.cfg"), allow_exec=True)
    assert [d.uname for d in cfg.disks] == [u"phy:/dev/vg0/loopy-0", u"phy:/dev/vg0/loopy-1"]
    assert [d.vdev for d in cfg.disks] == [u"xvda", u"xvdb"]


def test_exec_mode_matches_evaluator_on_seed():
    a = config.load(data("remus-fu-hvm.cfg"), uname=X86_64)
    b = config.load(data("remus-fu-hvm.cfg"), allow_exec=True)
    assert a.disks == b.disks and a.name == b.name and a.memory == b.memory
    assert "xm_vars" not in b.options and "os" not in b.options


def test_exec_mode_error_has_line():
    with pytest.raises(ConfigError) as exc:
        xm_cfg.evaluate(u"name = 'a'\n\nx = 1 // 0\n", path="e.cfg", allow_exec=True)
    assert exc.value.line == 3 and "ZeroDivisionError" in exc.value.reason


@pytest.mark.parametrize("text,needle", [
    (u"disk = 'phy:/dev/x,xvda,w'\n", "a single string"),
    (u"disk = [1]\n", "disk[0]: expected a string"),
    (u"memory = 'lots'\n", "memory: expected an integer"),
    (u"memory = True\n", None),  # a bool is no option for xm: memory unset
    (u"builder = 'pvh'\n", "builder: expected 'linux' or 'hvm'"),
    (u"vif = 'bridge=xenbr0'\n", "vif: expected a list"),
    (u"name = 3\n", "name: expected a string"),
])
def test_model_field_errors(text, needle):
    if needle is None:
        assert xm_cfg.parse(text, path="m.cfg", uname=X86_64).memory is None
        return
    with pytest.raises(ConfigError) as exc:
        xm_cfg.parse(text, path="m.cfg", uname=X86_64)
    assert needle in exc.value.reason and exc.value.line == 1


def test_memory_as_text_is_accepted_like_xm():
    assert xm_cfg.parse(u"memory = '512'\n", uname=X86_64).memory == 512


_pyish = st.text(alphabet=u"abcdefxyz_0123456789 =+-*/%()[]{}'\",.:\n\t#\\ifelsmportu\u2019", max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80), _pyish))
def test_evaluator_raises_only_config_error(text):
    try:
        config.parse_text(text, path="h.cfg", fmt="xm", uname=X86_64)
    except ConfigError:
        pass
