"""config.disk: xm disk specs, remus unames, xl disk specs.

The rules are the ones docs/xen-facts.md section 2 gives for create.py's
preprocess_disk and block-remus, and docs/misc/xl-disk-configuration.txt
(Xen 4.5) for xl; no Xen code runs here.
"""
from __future__ import absolute_import, division, print_function

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext.config import disk
from xen_remus_ext.errors import ConfigError
from xen_remus_ext.model import DiskSpec, RemusSpec

SEED = u"tap:remus:hypervisor2-IP-addr:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img"


def test_seed_disk_spec():
    d = disk.parse_disk_spec(SEED + u",hda,w", line=14)
    assert d == DiskSpec(SEED, u"hda", u"w", None, None,
                         RemusSpec(u"hypervisor2-IP-addr", 9000, u"aio",
                                   u"/var/lib/xen/images/hvmguest.x86-64.img"), 14)


def test_fields_kept_unstripped_like_preprocess_disk():
    d = disk.parse_disk_spec(u"phy:/dev/vg/x, xvda, w, 0, x86_64-abi")
    assert (d.uname, d.vdev, d.mode, d.backend, d.protocol) == (
        u"phy:/dev/vg/x", u" xvda", u" w", u" 0", u" x86_64-abi")
    assert d.remus is None


@pytest.mark.parametrize("text", [u"phy:/dev/x,xvda", u"a,b,c,d,e,f", u"", u"tap:remus:h:1|aio:/x"])
def test_invalid_field_count(text):
    with pytest.raises(ConfigError) as exc:
        disk.parse_disk_spec(text, line=7, path="g.cfg")
    assert exc.value.line == 7 and "3 to 5 fields" in exc.value.reason


@pytest.mark.parametrize("uname,expected", [
    (u"tap:remus:10.0.0.2:9000|aio:/img", (u"10.0.0.2", 9000, u"aio", u"/img")),
    (u"tap2:remus:10.0.0.2:9000|aio:/img", (u"10.0.0.2", 9000, u"aio", u"/img")),
    (u"tap2:tapdisk:remus:b:9001|vhd:/v.vhd", (u"b", 9001, u"vhd", u"/v.vhd")),
    (u"tap:tapdisk:remus:b:9001|aio:/a:b", (u"b", 9001, u"aio", u"/a:b")),
    (u"tap:remus:b|aio:/img", (u"b", None, u"aio", u"/img")),
    (u"tap:remus:b:http|aio:/img", (u"b", u"http", u"aio", u"/img")),
    (u"tap:remus:b:70000|aio:/img", (u"b", u"70000", u"aio", u"/img")),
    (u"tap:remus:[fe80::1]:9000|aio:/img", (u"fe80::1", 9000, u"aio", u"/img")),
    (u"tap:remus:fe80::1:9000|aio:/img", (u"fe80::1", 9000, u"aio", u"/img")),
    (u"tap:remus:b:9000", (u"b", 9000, u"", u"")),
])
def test_parse_remus_uname(uname, expected):
    assert tuple(disk.parse_remus_uname(uname)) == expected


@pytest.mark.parametrize("uname", [u"tap:aio:/img", u"tap2:tapdisk:aio:/img", u"phy:/dev/sda",
                                   u"file:/remus:x", u"remus:h:1|aio:/x", None, 3])
def test_not_remus(uname):
    assert disk.parse_remus_uname(uname) is None


def test_hostport_span():
    u = u"tap2:tapdisk:remus:h:9|aio:/x"
    start, end = disk.remus_hostport_span(u)
    assert u[start:end] == u"h:9"


# -- xl ---------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    u"/dev/vg/guest-volume,,hda",
    u"/dev/vg/guest-volume,raw,hda,rw",
    u"format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
])
def test_xl_equivalent_forms(text):
    d = disk.parse_xl_disk_spec(text)
    assert (d.uname, d.vdev, d.mode, d.remus) == (u"/dev/vg/guest-volume", u"hda", u"w", None)


@pytest.mark.parametrize("text", [
    u"/root/image.iso,,hdc,cdrom",
    u"/root/image.iso,,hdc,,cdrom",
    u"/root/image.iso,raw,hdc,devtype=cdrom",
    u"format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
])
def test_xl_cdrom_forms(text):
    d = disk.parse_xl_disk_spec(text)
    assert (d.uname, d.vdev, d.mode, d.devtype) == (u"/root/image.iso", u"hdc", u"r", "cdrom")


@pytest.mark.parametrize("text,vdev,devtype", [
    (u"phy:/dev/vg/a,hda,w", u"hda", "disk"),
    (u"file:/srv/tools.iso,hdc:cdrom,r", u"hdc", "cdrom"),
    (u"file:/srv/tools.iso,ioemu:hdc:cdrom,r", u"ioemu:hdc", "cdrom"),
    (u"phy:/dev/vg/a,hdb:disk,w", u"hdb", "disk"),
])
def test_xm_devtype_is_held_apart(text, vdev, devtype):
    d = disk.parse_disk_spec(text)
    assert (d.vdev, d.devtype, d.xm_dev) == (vdev, devtype, vdev + (":cdrom" if devtype == "cdrom" else ""))


def test_xl_devtype_values_like_libxlutil():
    assert disk.parse_xl_disk_spec(u"/i.img,raw,xvdb,rw,devtype=disk").devtype == "disk"
    assert disk.parse_xl_disk_spec(u"/i.iso,raw,xvdc:cdrom,r").devtype == "cdrom"
    with pytest.raises(ConfigError) as exc:
        disk.parse_xl_disk_spec(u"/i.iso,raw,xvdc,r,devtype=floppy", line=3, path="g.cfg")
    assert exc.value.line == 3 and "devtype: expected cdrom or disk" in exc.value.reason


def test_xl_target_eats_the_rest():
    d = disk.parse_xl_disk_spec(u"vdev=xvda, target=/srv/a,b c ")
    assert d.uname == u"/srv/a,b c "


def test_xl_legacy_xm_form_keeps_remus_uname():
    d = disk.parse_xl_disk_spec(SEED + u",hda,w")
    assert (d.vdev, d.mode) == (u"hda", u"w")
    assert d.remus.port == 9000


@pytest.mark.parametrize("text,needle", [
    (u"vdev=a, vdev=b, target=/x", "vdev given twice"),
    (u"colour=red, target=/x", "unknown key 'colour'"),
    (u"/x,raw,xvda,rx", "access: expected ro, r, rw or w"),
    (u"a,b,c,d,e", "at most 4 positional"),
    (u"/x,raw,xvda,rw,vdev=xvdb", "both by position and by name"),
])
def test_xl_errors(text, needle):
    with pytest.raises(ConfigError) as exc:
        disk.parse_xl_disk_spec(text, line=3, path="x.cfg")
    assert needle in exc.value.reason
    assert exc.value.line == 3


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_disk_parsers_raise_only_config_error(text):
    for fn in (disk.parse_disk_spec, disk.parse_xl_disk_spec):
        try:
            d = fn(text)
        except ConfigError:
            continue
        assert isinstance(d, DiskSpec)
    r = disk.parse_remus_uname(text)
    assert r is None or isinstance(r, RemusSpec)


@pytest.mark.parametrize("uname,path", [
    (u"file:/srv/a.img", u"/srv/a.img"), (u"phy:/dev/vg/a", u"/dev/vg/a"), (u"tap2:aio:/srv/a.img", u"/srv/a.img"),
    (u"tap:tapdisk:aio:/srv/a.img", u"/srv/a.img"), (u"tap2:remus:10.0.0.2:9000|aio:/srv/a:b.img", u"/srv/a:b.img"),
    (u"tap2:log:|aio:/srv/a.img", u"/srv/a.img"), (u"/srv/bare.img", u"/srv/bare.img"),
])
def test_uname_path(uname, path):
    assert disk.uname_path(uname) == path


def test_sim_host_reads_unames_with_the_config_parser():
    from xen_remus_ext.errors import ToolstackError
    from xen_remus_ext.sim import host
    assert host.parse_uname(u"tap2:remus:10.0.0.2:9000|aio:/srv/a.img") == ((u"10.0.0.2", 9000), u"/srv/a.img")
    assert host.parse_uname(u"tap:tapdisk:remus:10.0.0.2:9001|aio:/srv/b.img") == ((u"10.0.0.2", 9001),
                                                                                   u"/srv/b.img")
    assert host.parse_uname(u"file:/srv/c.img") == (None, u"/srv/c.img")
    for bad in (u"tap2:remus:10.0.0.2|aio:/srv/a.img", u"tap2:remus:10.0.0.2:99999|aio:/srv/a.img",
                u"file:relative.img"):
        with pytest.raises(ToolstackError):
            host.parse_uname(bad)
