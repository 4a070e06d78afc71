"""config.xl_cfg and format detection: xl.cfg(5) files.

xl cannot run here; the grammar is libxlu's (Xen 4.5, as the module doc
writes it down) and the golden files are written for these tests.
"""
from __future__ import absolute_import, division, print_function

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext import config
from xen_remus_ext.config import xl_cfg
from xen_remus_ext.errors import ConfigError
from xen_remus_ext.model import RemusSpec

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data")


def data(*parts):
    return os.path.join(DATA, *parts)


def test_pv_golden():
    cfg = config.load(data("xlcfg", "pv.cfg"))
    assert cfg.format == "xl"
    assert (cfg.name, cfg.memory, cfg.builder, cfg.vcpus) == (u"xlpv", 1024, "linux", 2)
    assert cfg.kernel == u"/boot/vmlinuz-4.19.0-xen"
    assert cfg.vifs == (u"mac=00:16:3e:01:02:03,bridge=xenbr0",)
    assert [(d.uname, d.vdev, d.mode, d.line) for d in cfg.disks] == [
        (u"/dev/vg0/xlpv-root", u"xvda1", u"w", 14),
        (u"/dev/vg0/xlpv-swap", u"xvda2", u"w", 15),
        (u"phy:/dev/drbd0", u"xvdb", u"w", 16),
    ]
    assert cfg.options["maxmem"] == u"2048"  # ';' separates settings on one line
    assert cfg.options["on_crash"] == u"restart"


def test_hvm_remus_golden():
    cfg = config.load(data("xlcfg", "hvm-remus.cfg"))
    assert cfg.format == "xl"
    assert (cfg.name, cfg.memory, cfg.builder) == (u"xlhvm", 512, "hvm")  # memory = 0x200
    assert cfg.disks[0].remus == RemusSpec(u"192.168.10.2", 9000, u"aio", u"/var/lib/xen/images/xlhvm.img")
    assert (cfg.disks[1].uname, cfg.disks[1].vdev, cfg.disks[1].mode) == (u"/srv/iso/tools.iso", u"hdc", u"r")
    assert cfg.disks[1].devtype == "cdrom" and cfg.disks[0].devtype == "disk"
    assert cfg.options["serial"] == u"pty"


def test_strings_escapes_and_lists():
    s = xl_cfg.parse_settings(u'a = "x\\ty\\"z\\x41\\101"\nb = [\n  "1",\n\n  2 ,\n]\nc = []; d=\'q\'\n')
    assert s.options == {"a": u'x\ty"zAA', "b": [u"1", u"2"], "c": [], "d": u"q"}
    assert s.item_lines["b"] == [3, 5]
    assert s.lines == {"a": 1, "b": 2, "c": 7, "d": 7}


def test_later_setting_wins():
    assert xl_cfg.parse_settings(u'name = "a"\nname = "b"\n').options["name"] == u"b"


@pytest.mark.parametrize("text,line,col,needle", [
    (u'name = "a"\nmemory = 256 + 1\n', 2, 14, "looks like Python"),
    (u"import os\n", 1, 8, "expected '=' after import"),
    (u'Name = "x"\n', 1, 1, "lower case"),
    (u'name = "abc\n', 1, 8, "unterminated string"),
    (u'disk = [ "a" "b" ]\n', 1, 14, "expected ',' or ']'"),
    (u'name = \n', 1, 8, "expected a string or a number, got end of line"),
    (u'x = "\\xZZ"\n', 1, 7, "hex"),
    (u'a = 1 b = 2\n', 1, 7, "expected end of line or ';'"),
])
def test_errors_name_line_and_column(text, line, col, needle):
    with pytest.raises(ConfigError) as exc:
        xl_cfg.parse_settings(text, path="x.cfg")
    assert (exc.value.line, exc.value.column) == (line, col), str(exc.value)
    assert needle in exc.value.reason


@pytest.mark.parametrize("text,builder", [(u'type = "hvm"\n', "hvm"), (u'type = "pv"\n', "linux"),
                                          (u'builder = "generic"\n', "linux"), (u'builder = "hvm"\n', "hvm")])
def test_builder_and_type(text, builder):
    assert xl_cfg.parse(text).builder == builder


@pytest.mark.parametrize("text,memory", [(u"memory = 0x200\n", 512), (u"memory = 0400\n", 256),
                                         (u"memory = 256\n", 256), (u'memory = "1024"\n', 1024)])
def test_numbers_read_like_strtoul_base_0(text, memory):
    assert xl_cfg.parse(text).memory == memory


def test_bad_type():
    with pytest.raises(ConfigError) as exc:
        xl_cfg.parse(u'type = "pvm"\n', path="t.cfg")
    assert "type: expected hvm, pv or pvh" in exc.value.reason and exc.value.line == 1


@pytest.mark.parametrize("name,fmt", [
    (("xlcfg", "pv.cfg"), "xl"), (("xlcfg", "hvm-remus.cfg"), "xl"),
    (("cfg", "remus-fu-hvm.cfg"), "xm"), (("cfg", "remus-fu-hvm-verbatim.cfg"), "xm"),
    (("cfg", "pv-remus.cfg"), "xm"), (("cfg", "bad-remus.cfg"), "xm"),
    (("sxp", "hvmdomu-xm-list-l.sxp"), "sxp"), (("sxp", "pv-vm-create.sxp"), "sxp"),
    (("xml", "hvmdomu.xml"), "xml"),
])
def test_detect_format(name, fmt):
    with open(data(*name), "rb") as f:
        assert config.detect_format(f.read()) == fmt


def test_plain_key_value_file_is_xm_by_default():
    assert config.detect_format(u'name = "a"\nmemory = 256\ndisk = ["phy:/dev/x,xvda,w"]\n') == "xm"


def test_format_override():
    cfg = config.parse_text(u'name = "a"\nmemory = 256\n', fmt="xl")
    assert cfg.format == "xl" and cfg.memory == 256
    with pytest.raises(ConfigError) as exc:
        config.parse_text(u"x", fmt="yaml")
    assert "expected one of xm, xl, sxp, xml" in exc.value.reason


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=80),
                 st.text(alphabet=u'abz_.09x =;,[]"\'\\#\n\t+', max_size=80)))
def test_xl_parser_raises_only_config_error(text):
    try:
        config.parse_text(text, path="h.cfg", fmt="xl")
    except ConfigError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=60), st.text(max_size=60)))
def test_autodetect_raises_only_config_error(blob):
    try:
        config.parse_text(blob, path="h", uname=(u"Linux", u"h", u"", u"", u"x86_64"))
    except ConfigError:
        pass
