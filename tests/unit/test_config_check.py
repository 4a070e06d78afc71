# -*- coding: utf-8 -*-
"""config.check: what xm does not validate and tapdisk would fail on.

tapdisk and block-remus cannot run here; the rules follow docs/xen-facts.md
sections 2 and 5 (port mandatory, first IPv4 address, driver names).
"""
from __future__ import absolute_import, division, print_function

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext.config import check
from xen_remus_ext.model import DiskSpec

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data")


def data(*parts):
    return os.path.join(DATA, *parts)


def lines_of(diags):
    return [check.format_diagnostic(d) for d in diags]


def test_bad_cfg_golden():
    with open(data("cfg", "bad-remus.cfg"), "rb") as f:
        diags = check.check_text(f.read(), path="bad-remus.cfg")
    with io.open(data("cfg", "bad-remus.check"), encoding="utf-8") as f:
        assert lines_of(diags) == f.read().splitlines()
    assert check.has_errors(diags)


def test_verbatim_seed_line_3_first():
    diags = check.check_file(data("cfg", "remus-fu-hvm-verbatim.cfg"))
    first = check.format_diagnostic(diags[0])
    assert first.startswith(data("cfg", "remus-fu-hvm-verbatim.cfg") + u":3: error: typographic quote \u2019")
    assert all(d.severity == "error" for d in diags)
    assert diags[-1].line == 4 and "indented block" in diags[-1].message


@pytest.mark.parametrize("parts", [("cfg", "remus-fu-hvm.cfg"), ("xml", "hvmdomu.xml"),
                                   ("sxp", "hvmdomu-xm-list-l.sxp"), ("xlcfg", "hvm-remus.cfg"),
                                   ("cfg", "pv-remus.cfg"), ("cfg", "hvm-remus.cfg")])
def test_good_files_have_no_errors(parts):
    diags = check.check_file(data(*parts))
    assert not check.has_errors(diags), lines_of(diags)


def test_xl_cfg_with_remus_uname_warns_xend_only():
    diags = check.check_file(data("xlcfg", "hvm-remus.cfg"))
    assert [(d.line, d.severity) for d in diags] == [(8, "warning")]
    assert "xl has no remus: disks" in diags[0].message


def test_seed_fixed_warns_about_host_name_and_tap_prefix():
    diags = check.check_file(data("cfg", "remus-fu-hvm.cfg"))
    assert [(d.line, d.severity) for d in diags] == [(14, "warning"), (14, "warning")]
    assert "'hypervisor2-IP-addr' is a name" in diags[0].message
    assert "'tap:' reaches xend's blktap2 (and its remus driver) only on Xen 4.0" in diags[1].message
    assert "write 'tap2:remus:...'" in diags[1].message


@pytest.mark.parametrize("version,expected", [
    (None, [(14, "warning", "only on Xen 4.0")]),
    ((4, 0), []),
    ((4, 0, 1), []),
    ((4, 1, 6, 1), [(14, "error", "on Xen 4.1.6.1, xm sends a 'tap:' disk to xend's BlktapController")]),
    ((4, 4, 4), [(14, "error", "write 'tap2:remus:hypervisor2-IP-addr:9000|aio:")]),
    ((3, 4), [(14, "error", "Xen 3.4 has no blktap2")]),
])
def test_tap_prefix_routes_by_xen_release(version, expected):
    diags = [d for d in check.check_file(data("cfg", "remus-fu-hvm.cfg"), xen_version=version)
             if "is a name" not in d.message]
    assert [(d.line, d.severity) for d in diags] == [(line, sev) for line, sev, _ in expected]
    for d, (_line, _sev, needle) in zip(diags, expected):
        assert needle in d.message


@pytest.mark.parametrize("version", [None, (4, 0), (4, 1), (4, 4, 4)])
def test_tap2_prefix_reaches_blktap2_from_4_0(version):
    text = u"name = 'g'\ndisk = ['tap2:remus:10.0.0.2:9000|aio:/img/a,xvda,w']\n"
    assert check.check_text(text, path="g.cfg", xen_version=version) == []
    assert check.has_errors(check.check_text(text, path="g.cfg", xen_version=(3, 4)))


def test_sxp_device_class_decides_not_the_prefix():
    tap2 = u"(vm (name a)\n (device (tap2 (uname 'tap:remus:10.0.0.1:9000|aio:/x') (dev hda) (mode w))))"
    assert check.check_text(tap2, path="a.sxp", xen_version=(4, 1)) == []
    tap = u"(vm (name a)\n (device (tap (uname 'tap2:remus:10.0.0.1:9000|aio:/x') (dev hda) (mode w))))"
    assert [(d.line, d.severity) for d in check.check_text(tap, path="a.sxp", xen_version=(4, 1))] == [
        (2, "error")]


def test_xenapi_xml_tap_disks_are_not_routed_by_prefix():
    diags = check.check_file(data("xml", "hvmdomu.xml"), xen_version=(4, 1))
    assert not [d for d in diags if "blktap" in d.message]


def test_sxp_and_xml_lines_point_at_the_uname():
    sxp_diags = check.check_text(
        u"(vm (name a)\n (device (tap (uname 'tap:remus:10.0.0.1|aio:/x') (dev hda) (mode w))))", path="a.sxp")
    assert [(d.line, d.severity) for d in sxp_diags] == [(2, "error"), (2, "warning")]
    assert "no port" in sxp_diags[0].message and "'tap:' reaches" in sxp_diags[1].message


def test_comma_in_path_from_xml():
    d = DiskSpec(u"phy:/img/a,b", u"xvda", u"w", line=4)
    found = check.check_disk(d, "f.xml")
    assert [x.severity for x in found] == ["error"] and "a ',' in the path" in found[0].message


@pytest.mark.parametrize("host,severity", [(u"10.0.0.1", None), (u"255.255.255.255", None),
                                           (u"256.1.1.1", "warning"), (u"backup", "warning"),
                                           (u"[::1]", "error"), (u"::1", "error")])
def test_host_kinds(host, severity):
    from xen_remus_ext.config.disk import parse_remus_uname
    uname = u"tap:remus:%s:9000|aio:/x" % host
    d = DiskSpec(uname, u"xvda", u"w", remus=parse_remus_uname(uname), line=1)
    found = check.check_disk(d, "f")
    assert [x.severity for x in found] == ([severity] if severity else [])


@pytest.mark.parametrize("uname,needle", [
    (u"tap:remus:1.2.3.4:9000", "inner driver after '|'"),
    (u"tap:remus:1.2.3.4:9000|remus:/x", "stacked twice"),
    (u"tap:remus:1.2.3.4:9000|aio:", "expected a path after aio:"),
    (u"tap:remus::9000|aio:/x", "backup's address"),
    (u"tap:remus:1.2.3.4:0|aio:/x", "port: expected a number 1-65535, got '0'"),
])
def test_uname_errors(uname, needle):
    from xen_remus_ext.config.disk import parse_remus_uname
    d = DiskSpec(uname, u"xvda", u"w", remus=parse_remus_uname(uname), line=1)
    found = check.check_disk(d, "f")
    assert any(needle in x.message and x.severity == "error" for x in found), found


def test_unreadable_file_is_one_error(tmp_path):
    diags = check.check_file(str(tmp_path / "absent.cfg"))
    assert len(diags) == 1 and diags[0].severity == "error" and "cannot read" in diags[0].message


def test_xl_disk_error_does_not_hide_others():
    text = (u'name = "a"\ndisk = [ "vdev=x, vdev=y, target=/a",\n'
            u'         "tap:remus:10.0.0.1:9000|aio:/b,hda,r" ]\n')
    diags = check.check_text(text, path="x.cfg", fmt="xl")
    assert [(d.line, d.severity) for d in diags] == [(2, "error"), (3, "error"), (3, "warning")]
    assert "vdev given twice" in diags[0].message and "must be writable" in diags[1].message


def test_format_diagnostic():
    assert check.format_diagnostic(check.Diagnostic("f.cfg", 7, "warning", "x")) == "f.cfg:7: warning: x"


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=80), st.binary(max_size=60),
                 st.text(alphabet=u"disk=[]'\",:|tap remus 10.0.0.1 9000 aio /x hda w \n#()<>", max_size=90)))
def test_check_never_raises(text):
    diags = check.check_text(text, path="p.cfg", uname=(u"Linux", u"h", u"", u"", u"x86_64"))
    for d in diags:
        assert d.severity in ("error", "warning") and d.path
