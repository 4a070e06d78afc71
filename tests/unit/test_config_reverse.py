"""config.reverse: remus unames pointed at another host, every other byte kept."""
from __future__ import absolute_import, division, print_function

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext import config
from xen_remus_ext.config import reverse
from xen_remus_ext.errors import ConfigError, ValidationError

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data")
SEED_HP = u"hypervisor2-IP-addr:9000"


def data(*parts):
    return os.path.join(DATA, *parts)


def read(*parts):
    with io.open(data(*parts), encoding="utf-8", newline="") as f:
        return f.read()


def test_seed_changes_only_the_host():
    old = read("cfg", "remus-fu-hvm.cfg")
    new = reverse.reverse_text(old, None, u"hypervisor1-IP-addr")
    assert old.count(SEED_HP) == 1
    assert new == old.replace(SEED_HP, u"hypervisor1-IP-addr:9000")


def test_port_map():
    old = read("cfg", "remus-fu-hvm.cfg")
    new = reverse.reverse_text(old, "xm", u"10.0.0.1", {9000: 9100})
    assert new == old.replace(SEED_HP, u"10.0.0.1:9100")


def test_port_map_that_matches_nothing_is_an_error():
    old = read("cfg", "remus-fu-hvm.cfg")
    with pytest.raises(ConfigError) as exc:
        reverse.reverse_text(old, "xm", u"10.0.0.1", {9000: 9100, 1234: 4321}, path="s.cfg")
    assert "--port 1234=4321: no remus disk uses port 1234 (ports in use: 9000)" in exc.value.reason


# (file, original host, ports in it)
GOLDEN = [
    (("cfg", "remus-fu-hvm.cfg"), u"hypervisor2-IP-addr"),
    (("cfg", "hvm-remus.cfg"), u"192.168.10.2"),
    (("xlcfg", "hvm-remus.cfg"), u"192.168.10.2"),
    (("sxp", "hvmdomu-xm-list-l.sxp"), u"192.168.10.2"),
    (("sxp", "pv-vm-create.sxp"), u"10.1.0.7"),
    (("xml", "hvmdomu.xml"), u"192.168.10.2"),
]


@pytest.mark.parametrize("parts,orig_host", GOLDEN)
def test_reverse_twice_is_identity_on_golden_files(parts, orig_host):
    with open(data(*parts), "rb") as f:
        old = f.read()
    ports = set(d.remus.port for d in config.parse_text(old, uname=(u"Linux", u"h", u"", u"", u"x86_64")).remus_disks)
    there = reverse.reverse_text(old, None, u"172.16.5.9", dict((p, p + 500) for p in ports))
    assert isinstance(there, bytes) and there != old
    cfg = config.parse_text(there, uname=(u"Linux", u"h", u"", u"", u"x86_64"))
    assert {d.remus.host for d in cfg.remus_disks} == {u"172.16.5.9"}
    # lines other than the ones holding a remus uname are byte-identical
    old_lines, new_lines = old.split(b"\n"), there.split(b"\n")
    assert len(old_lines) == len(new_lines)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert changed and all(b"remus:" in old_lines[i] for i in changed)
    back = reverse.reverse_text(there, None, orig_host, dict((p + 500, p) for p in ports))
    assert back == old


def test_two_disks_same_port_map():
    old = read("cfg", "hvm-remus.cfg")
    new = reverse.reverse_text(old, None, u"192.168.10.1", {9001: 9101})
    assert u"tap:remus:192.168.10.1:9000|aio:" in new
    assert u"tap:tapdisk:remus:192.168.10.1:9101|aio:" in new


@pytest.mark.parametrize("fmt,text", [
    ("xm", u"# was tap:remus:10.0.0.2:9000|aio:/x\nname = 'a'  # tap:remus:10.0.0.2:9000|\n"
           u"disk = ['tap:remus:10.0.0.2:9000|aio:/x,hda,w']\n"),
    ("xl", u'# was tap:remus:10.0.0.2:9000|aio:/x\nname = "a" # tap:remus:10.0.0.2:9000|\n'
           u'disk = ["tap:remus:10.0.0.2:9000|aio:/x,hda,w"]\n'),
    ("sxp", u"# was tap:remus:10.0.0.2:9000|aio:/x\n(vm (name a) # tap:remus:10.0.0.2:9000|\n"
            u" (device (tap (uname 'tap:remus:10.0.0.2:9000|aio:/x') (dev hda) (mode w))))\n"),
])
def test_comments_are_left_alone(fmt, text):
    new = reverse.reverse_text(text, fmt, u"10.9.9.9")
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert old_lines[:2] == new_lines[:2]
    assert new_lines[2] == old_lines[2].replace(u"10.0.0.2", u"10.9.9.9")


def test_xml_comment_is_left_alone():
    text = read("xml", "hvmdomu.xml")
    new = reverse.reverse_text(text, "xml", u"10.9.9.9")
    assert u"the disk is tap:remus:... -->" in new
    assert new.count(u"10.9.9.9") == 1


def test_crlf_and_bom_are_kept():
    text = b"\xef\xbb\xbfname = 'a'\r\ndisk = ['tap:remus:10.0.0.2:9000|aio:/x,hda,w']\r\n"
    new = reverse.reverse_text(text, None, u"10.0.0.1")
    assert new == text.replace(b"10.0.0.2", b"10.0.0.1")


def test_computed_uname_is_refused():
    text = u"h = '10.0.0.2'\ndisk = ['tap:remus:' + h + ':9000|aio:/x,hda,w']\n"
    with pytest.raises(ConfigError) as exc:
        reverse.reverse_text(text, "xm", u"10.0.0.1", path="c.cfg")
    assert "computed by the file" in exc.value.reason and exc.value.line == 2


def test_uname_built_with_percent_is_refused():
    # pv-remus.cfg builds its uname with '...remus:%s:9010|...' % backup
    with pytest.raises(ConfigError) as exc:
        reverse.reverse_text(read("cfg", "pv-remus.cfg"), None, u"10.0.0.1", path="pv.cfg")
    assert "computed by the file" in exc.value.reason and exc.value.line == 39


def test_variable_uname_rewritten_when_literal():
    text = u"root = 'tap:remus:10.0.0.2:9000|aio:/x'\ndisk = [root + ',hda,w']\n"
    new = reverse.reverse_text(text, "xm", u"10.0.0.1")
    assert new == text.replace(u"10.0.0.2", u"10.0.0.1")


def test_no_remus_disk():
    with pytest.raises(ConfigError) as exc:
        reverse.reverse_text(read("xlcfg", "pv.cfg"), None, u"10.0.0.1", path="pv.cfg")
    assert "no remus disk" in exc.value.reason


@pytest.mark.parametrize("host", [u"", u"fe80::1", u"a b", u"h|x", u"h,x", u"h'"])
def test_bad_backup_host(host):
    with pytest.raises(ValidationError):
        reverse.reverse_text(read("cfg", "remus-fu-hvm.cfg"), None, host)


def test_port_map_parsing():
    assert reverse.parse_port_map(["9000=9001", "1=65535"]) == {9000: 9001, 1: 65535}
    for bad in ("9000", "a=1", "0=1", "1=70000", "=1"):
        with pytest.raises(ValidationError):
            reverse.parse_port_map([bad])


def test_reverse_file_in_place_keeps_orig(tmp_path):
    src = tmp_path / "g.cfg"
    old = read("cfg", "remus-fu-hvm.cfg").encode("utf-8")
    src.write_bytes(old)
    os.chmod(str(src), 0o640)
    reverse.reverse_file(str(src), u"10.0.0.1", in_place=True)
    assert (tmp_path / "g.cfg.orig").read_bytes() == old
    assert src.read_bytes() == old.replace(b"hypervisor2-IP-addr", b"10.0.0.1")
    assert os.stat(str(src)).st_mode & 0o777 == 0o640
    with pytest.raises(ConfigError) as exc:
        reverse.reverse_file(str(src), u"10.0.0.3", in_place=True)
    assert "already exists" in exc.value.reason
    assert src.read_bytes() == old.replace(b"hypervisor2-IP-addr", b"10.0.0.1")


def test_reverse_file_output(tmp_path):
    src = tmp_path / "g.cfg"
    old = read("cfg", "remus-fu-hvm.cfg").encode("utf-8")
    src.write_bytes(old)
    out = tmp_path / "out.cfg"
    reverse.reverse_file(str(src), u"10.0.0.1", {9000: 9001}, out=str(out))
    assert out.read_bytes() == old.replace(b"hypervisor2-IP-addr:9000", b"10.0.0.1:9001")
    assert src.read_bytes() == old
    with pytest.raises(ConfigError):
        reverse.reverse_file(str(src), u"10.0.0.1", out=str(out), in_place=True)


_hosts = st.one_of(
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: u"%d.%d.%d.%d" % t),
    st.text(alphabet=u"abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20))


@settings(max_examples=40, deadline=None)
@given(_hosts, st.integers(1, 65535))
def test_reverse_twice_identity_property(host, port):
    old = read("cfg", "hvm-remus.cfg")
    there = reverse.reverse_text(old, "xm", host, {9000: port})
    back = reverse.reverse_text(there, "xm", u"192.168.10.2", {port: 9000} if port != 9001 else {})
    if port == 9001:  # both disks now share 9001; the map back cannot tell them apart
        assert back == old.replace(u"192.168.10.2:9000", u"192.168.10.2:9001")
    else:
        assert back == old


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=80),
                 st.text(alphabet=u"disk=[]'\",:|tap2 remus 10.0.0.1 9000 aio /x hda w \n#()%+", max_size=90)))
def test_reverse_raises_only_config_errors(text):
    try:
        reverse.reverse_text(text, None, u"10.0.0.9")
    except (ConfigError, ValidationError):
        pass
