# -*- coding: utf-8 -*-
"""config.sxp: xend's s-expression reader and writer, and the domain forms.

xend cannot run here; the expected values follow xend 4.1.0's sxp.py rules
as docs/xen-facts.md section 3 writes them down, and the golden files stand in
for ``xm list -l`` output and the ``(vm ...)`` list ``xm create`` builds.
"""
from __future__ import absolute_import, division, print_function

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext import model
from xen_remus_ext.config import sxp
from xen_remus_ext.config.disk import parse_remus_uname
from xen_remus_ext.errors import ConfigError

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data", "sxp")


def read(name):
    with io.open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


# -- reading ---------------------------------------------------------------

def test_parse_lists_atoms_and_comments():
    assert sxp.parse(u"(a (b c) d) # comment\n(e)") == [[u"a", [u"b", u"c"], u"d"], [u"e"]]


def test_parse_empty_input_is_empty_list():
    assert sxp.parse(u"") == []
    assert sxp.parse(u"  # only a comment\n") == []


def test_parse_strings_with_c_escapes():
    assert sxp.parse(u"'a\\tb' \"q\\\"x\" '\\x41\\101\\n'") == [u"a\tb", u'q"x', u"AA\n"]


def test_parse_hex_letters_read_as_hex():
    # xend's reader maps a-f to 0-5; its writer means hex, and so do we
    assert sxp.parse(u"'\\xab'") == [u"\xab"]


def test_parse_utf8_escapes_decode_to_text():
    assert sxp.parse(u"'caf\\xc3\\xa9'") == [u"caf\xe9"]


def test_parse_unknown_escape_keeps_backslash():
    assert sxp.parse(u"'C:\\path'") == [u"C:\\path"]


def test_separators_and_quotes_inside_atoms():
    # an atom begins with any printable char and ends at a separator
    assert sxp.parse(u"[abc a\"b ;x a]b") == [u"[abc", u'a"b', u";x", u"a", u"]b"]


def test_parse_bytes_input():
    assert sxp.parse(b"(name x)") == [[u"name", u"x"]]


def test_eot_ends_input_at_top_level():
    assert sxp.parse(u"(a)\x04(b") == [[u"a"]]


@pytest.mark.parametrize("text,line,col,needle", [
    (u"(a\n (b)", 1, 1, "not closed"),
    (u"a )", 1, 3, "unexpected ')'"),
    (u"(a 'bc)", 1, 4, "string"),
    (u"'\\x'", 1, 3, "hex"),
    (u"'\\777'", 1, 5, "octal"),
    (u"\n (\u2019name)", 2, 3, "U+2019"),
    (u"(a \x04)", 1, 4, "Control-D"),
])
def test_parse_errors_name_line_and_column(text, line, col, needle):
    with pytest.raises(ConfigError) as exc:
        sxp.parse(text, path="f.sxp")
    err = exc.value
    assert (err.path, err.line, err.column) == ("f.sxp", line, col), str(err)
    assert needle in str(err)


def test_parse_records_line_of_each_list():
    lines = {}
    val = sxp.parse(u"(a\n  (b)\n\n  (c))", lines=lines)
    top = val[0]
    assert lines[id(top)] == 1
    assert lines[id(top[1])] == 2
    assert lines[id(top[2])] == 4


# -- writing ---------------------------------------------------------------

def test_format_quotes_like_xend_to_string():
    uname = u"tap:remus:10.0.0.2:9000|aio:/var/lib/xen/images/g.img"
    assert sxp.format([u"uname", uname]) == u"(uname '%s')" % uname
    assert sxp.format([u"dev", u"hda:disk", 3, 1.5]) == u"(dev hda:disk 3 1.5)"
    assert sxp.format(u"@") == u"@"
    assert sxp.format(u"a b") == u"'a b'"


def test_format_uses_python2_repr_of_utf8_bytes():
    assert sxp.format(u"it's") == u'"it\'s"'
    assert sxp.format(u"a'\"b") == u"'a\\'\"b'"
    assert sxp.format(u"caf\xe9\n\\") == u"'caf\\xc3\\xa9\\n\\\\'"


def test_format_empty_string_is_quoted():
    # xend writes it bare and loses it on reading; identity needs ''
    assert sxp.format([u"bootloader", u""]) == u"(bootloader '')"


def test_format_rejects_other_types():
    with pytest.raises(Exception) as exc:
        sxp.format([u"x", {"a": 1}])
    assert "expected list, text, int or float" in str(exc.value)


_atoms = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_trees = st.recursive(_atoms, lambda kids: st.lists(kids, max_size=5), max_leaves=25)


@settings(max_examples=200, deadline=None)
@given(st.lists(_trees, max_size=4))
def test_write_then_read_is_identity(values):
    text = u" ".join(sxp.format(v) for v in values)
    assert sxp.parse(text) == values


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_parser_raises_only_config_error(text):
    try:
        sxp.parse(text)
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=u"()'\"\\x0123ab #;\n\x04[", max_size=60))
def test_parser_on_syntax_heavy_text_raises_only_config_error(text):
    try:
        val = sxp.parse(text)
    except ConfigError:
        return
    # whatever parsed also re-reads to itself
    assert sxp.parse(u" ".join(sxp.format(v) for v in val)) == val


# -- domain forms ------------------------------------------------------------

def test_xm_list_l_golden_domain_form():
    cfg = sxp.domain_config_from_sxp(read("hvmdomu-xm-list-l.sxp"), path="hvm.sxp")
    assert (cfg.name, cfg.memory, cfg.builder, cfg.vcpus) == (u"hvmdomuname", 256, "hvm", 1)
    assert cfg.kernel == u"/usr/lib/xen/boot/hvmloader"
    assert cfg.format == "sxp" and cfg.source == "hvm.sxp"
    assert len(cfg.disks) == 1
    d = cfg.disks[0]
    assert d.uname == u"tap:remus:192.168.10.2:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img"
    assert (d.vdev, d.mode) == (u"hda", u"w")
    assert d.remus == model.RemusSpec(u"192.168.10.2", 9000, u"aio",
                                      u"/var/lib/xen/images/hvmguest.x86-64.img")
    assert d.line == 51  # the (uname ...) line
    assert cfg.vifs == (u"bridge=eth0,mac=00:16:3e:4a:19:c2,script=/etc/xen/scripts/vif-bridge,"
                        u"uuid=9c0f4e1a-7b2d-11df-8a39-0800200c9a66,backend=0",)
    assert cfg.options[u"domid"] == u"3"
    assert cfg.options[u"device_model"] == u"/usr/lib64/xen/bin/qemu-dm"
    assert u"name" not in cfg.options


def test_domain_info_from_golden():
    info = sxp.domain_info_from_sxp(sxp.from_string(read("hvmdomu-xm-list-l.sxp")), host="h1")
    assert info == model.DomainInfo(3, u"hvmdomuname", u"-b----", 256, "h1")


def test_vm_create_form_pv_golden():
    cfg = sxp.domain_config_from_sxp(read("pv-vm-create.sxp"))
    assert (cfg.name, cfg.memory, cfg.builder, cfg.vcpus) == (u"pvguest", 512, "linux", 2)
    assert cfg.kernel == u"/boot/vmlinuz-2.6.32-5-xen-amd64"
    assert [d.vdev for d in cfg.disks] == [u"xvda1", u"xvda2"]
    assert cfg.disks[0].remus == model.RemusSpec(u"10.1.0.7", 9010, u"aio", u"/srv/xen/pvguest-root.img")
    assert cfg.disks[1].remus is None
    assert cfg.options[u"root"] == u"/dev/xvda1 ro"


def test_format_domain_sxp_round_trip():
    cfg = sxp.domain_config_from_sxp(read("pv-vm-create.sxp"))
    text = sxp.format_domain_sxp(cfg)
    assert text.startswith(u"(vm (name pvguest) (memory 512) (vcpus 2) (image (linux (kernel ")
    assert u"(device (tap2 (uname 'tap2:tapdisk:remus:10.1.0.7:9010|aio:/srv/xen/pvguest-root.img')" \
           u" (dev xvda1) (mode w)))" in text
    again = sxp.domain_config_from_sxp(text)
    for field in ("name", "memory", "builder", "kernel", "vcpus", "vifs"):
        assert getattr(again, field) == getattr(cfg, field)
    assert [d[:6] for d in again.disks] == [d[:6] for d in cfg.disks]


@pytest.mark.parametrize("text,needle", [
    (u"(domu (name x))", "expected a (vm ...) or (domain ...)"),
    (u"", "got no expression"),
    (u"(vm (memory lots))", "(memory ...): expected an integer, got 'lots'"),
    (u"(vm (image (netbsd (kernel k))))", "expected builder linux or hvm"),
    (u"(vm (device (vbd (dev hda) (mode w))))", "expected a (uname ...)"),
])
def test_domain_config_errors(text, needle):
    with pytest.raises(ConfigError) as exc:
        sxp.domain_config_from_sxp(text, path="x.sxp")
    assert needle in str(exc.value)
    assert str(exc.value).startswith("x.sxp:")


_words = st.text(alphabet=u"abcxyz019:/|-. '\"", min_size=1, max_size=12)
_disks = st.builds(
    lambda host, port, path, vdev, mode: model.DiskSpec(
        u"tap:remus:%s:%d|aio:%s" % (host, port, path), vdev, mode),
    st.sampled_from([u"10.0.0.2", u"backup"]), st.integers(1, 65535),
    st.text(alphabet=u"/abc ,'", min_size=1, max_size=10), st.sampled_from([u"hda", u"xvda1", u"hdc:cdrom"]),
    st.sampled_from([u"r", u"w", u"w!"]))


@settings(max_examples=100, deadline=None)
@given(_words, st.integers(1, 1 << 20), st.sampled_from(["linux", "hvm"]), st.one_of(st.none(), _words),
       st.integers(1, 64), st.lists(st.sampled_from([u"", u"mac=00:16:3e:00:00:01,bridge=xenbr0"]), max_size=3),
       st.lists(_disks, max_size=3))
def test_format_domain_sxp_then_read_keeps_the_model(name, memory, builder, kernel, vcpus, vifs, disks):
    cfg = model.DomainConfig(name=name, memory=memory, builder=builder, kernel=kernel, vcpus=vcpus,
                             vifs=vifs, disks=disks)
    again = sxp.domain_config_from_sxp(sxp.format_domain_sxp(cfg))
    assert (again.name, again.memory, again.builder, again.kernel, again.vcpus) == (
        name, memory, builder, kernel, vcpus)
    assert list(again.vifs) == vifs
    assert [(d.uname, d.vdev, d.mode, d.remus) for d in again.disks] == [
        (d.uname, d.vdev, d.mode, parse_remus_uname(d.uname)) for d in disks]
    assert all(d.remus is not None for d in again.disks)


_leaf = st.one_of(st.sampled_from([u"vm", u"domain", u"device", u"vbd", u"tap2", u"uname", u"dev", u"mode",
                                   u"image", u"hvm", u"linux", u"memory", u"vcpus", u"name", u"kernel", u"vif",
                                   u"256", u"w", u"tap:remus:h:1|aio:/x"]),
                  st.text(max_size=5), st.integers(-3, 300))
_any_tree = st.recursive(_leaf, lambda kids: st.lists(kids, max_size=5), max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([u"vm", u"domain"]), st.lists(_any_tree, max_size=6))
def test_domain_config_from_any_tree_raises_only_config_error(head, kids):
    """Stands in for whatever xend returns over XML-RPC (ints included)."""
    try:
        cfg = sxp.domain_config_from_sxp([head] + kids)
    except ConfigError:
        return
    assert cfg.format == "sxp"
