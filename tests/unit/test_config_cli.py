# -*- coding: utf-8 -*-
"""``xen-remus config show|check|reverse`` on real files, as a user runs them."""
from __future__ import absolute_import, division, print_function

import io
import json
import os
import subprocess
import sys

import pytest

from xen_remus_ext.cli import main as cli

DATA = os.path.join(os.path.dirname(__file__), os.pardir, "data")
SEED = os.path.join(DATA, "cfg", "remus-fu-hvm.cfg")
VERBATIM = os.path.join(DATA, "cfg", "remus-fu-hvm-verbatim.cfg")
SEED_UNAME = u"tap:remus:hypervisor2-IP-addr:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img"


def run(argv, capsys):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_show_json_seed(capsys):
    rc, out, err = run(["config", "show", "--json", SEED], capsys)
    assert rc == 0, err
    obj = json.loads(out)
    assert obj["name"] == u"hvmdomuname" and obj["memory"] == 256 and obj["builder"] == u"hvm"
    assert obj["kernel"] == u"/usr/lib/xen/boot/hvmloader" and obj["vcpus"] == 1 and obj["vifs"] == [u""]
    assert obj["disks"] == [{
        u"uname": SEED_UNAME, u"vdev": u"hda", u"mode": u"w", u"devtype": u"disk",
        u"remus": {u"host": u"hypervisor2-IP-addr", u"port": 9000, u"driver": u"aio",
                   u"path": u"/var/lib/xen/images/hvmguest.x86-64.img"}}]


@pytest.mark.parametrize("parts", [("xlcfg", "pv.cfg"), ("sxp", "hvmdomu-xm-list-l.sxp"), ("xml", "hvmdomu.xml")])
def test_show_json_other_formats_have_the_schema(parts, capsys):
    rc, out, _ = run(["config", "show", "--json", os.path.join(DATA, *parts)], capsys)
    obj = json.loads(out)
    assert rc == 0 and set(obj) == {"name", "memory", "builder", "kernel", "vcpus", "vifs", "disks"}
    assert isinstance(obj["memory"], int) and obj["builder"] in ("linux", "hvm")
    for d in obj["disks"]:
        assert set(d) == {"uname", "vdev", "mode", "devtype", "remus"}


def test_show_sxp_and_human(capsys):
    rc, out, _ = run(["config", "show", "--sxp", SEED], capsys)
    assert rc == 0
    assert out.startswith(u"(vm (name hvmdomuname) (memory 256) (vcpus 1) (image (hvm ")
    assert u"(device (tap (uname '%s') (dev hda) (mode w)))" % SEED_UNAME in out
    rc, out, _ = run(["config", "show", SEED], capsys)
    assert rc == 0 and u"remus: backup hypervisor2-IP-addr port 9000" in out


def test_show_format_override_and_exec(capsys):
    rc, _, err = run(["config", "show", "--format", "sxp", SEED], capsys)
    assert rc == 1 and u"SXP: expected a (vm ...)" in err
    rc, out, _ = run(["config", "show", "--exec", "--json", os.path.join(DATA, "cfg", "unsupported.cfg")], capsys)
    assert rc == 0 and len(json.loads(out)["disks"]) == 2


def test_check_verbatim_exit_1_line_3(capsys):
    rc, out, err = run(["config", "check", VERBATIM], capsys)
    assert rc == 1
    first = out.splitlines()[0]
    assert first.startswith(VERBATIM + u":3: error: typographic quote \u2019")
    assert u"Traceback" not in out + err


def test_check_seed_ok_with_warning(capsys):
    rc, out, _ = run(["config", "check", SEED], capsys)
    assert rc == 0
    assert out.splitlines() == [
        SEED + u":14: warning: remus disk 'hda': host 'hypervisor2-IP-addr' is a name, not an IP address: "
               u"tapdisk resolves it with getaddrinfo at open time; an IP address is more reliable",
        SEED + u":14: warning: remus disk 'hda': 'tap:' reaches xend's blktap2 (and its remus driver) only on "
               u"Xen 4.0; from 4.1 on xm sends it to BlktapController (blktap1, no remus driver); write "
               u"'tap2:remus:...', which reaches blktap2 on 4.0 and later (--xen-version names the release to "
               u"check for)",
        SEED + u": 0 errors, 2 warnings"]
    rc, out, _ = run(["config", "check", "--xen-version", "4.0", SEED], capsys)
    assert rc == 0 and out.endswith(u": 0 errors, 1 warning\n")
    rc, out, _ = run(["config", "check", "--xen-version", "4.4.4", SEED], capsys)
    assert rc == 1 and u":14: error: remus disk 'hda': on Xen 4.4.4, xm sends a 'tap:' disk" in out


def test_usage_errors_exit_2(capsys):
    for argv in (["config", "check"], ["config", "reverse", SEED], ["config", "show", "--json", "--sxp", SEED],
                 ["config", "check", "--format", "yaml", SEED], ["config"],
                 ["config", "check", "--xen-version", "four", SEED]):
        with pytest.raises(SystemExit) as exc:
            rc = cli.main(argv)
            raise SystemExit(rc)
        assert exc.value.code == 2, argv
    capsys.readouterr()


def test_reverse_stdout_and_in_place(tmp_path, capsys):
    rc, out, _ = run(["config", "reverse", SEED, "--backup", "10.0.0.1", "--port", "9000=9001"], capsys)
    with io.open(SEED, encoding="utf-8", newline="") as f:
        old = f.read()
    assert rc == 0 and out == old.replace(u"hypervisor2-IP-addr:9000", u"10.0.0.1:9001")
    cfg = tmp_path / "g.cfg"
    cfg.write_bytes(old.encode("utf-8"))
    rc, _, err = run(["config", "reverse", str(cfg), "--backup", "10.0.0.1", "--in-place"], capsys)
    assert rc == 0 and "original kept" in err
    assert (tmp_path / "g.cfg.orig").read_bytes() == old.encode("utf-8")
    rc, _, err = run(["config", "reverse", str(cfg), "--backup", "fe80::1", "-o", str(tmp_path / "x")], capsys)
    assert rc == 1 and "IPv6" in err and not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as ei:   # an option value that cannot be used: usage, exit 2
        cli.main(["config", "reverse", str(cfg), "--backup", "h", "--port", "nine"])
    assert ei.value.code == 2 and "--port: expected OLD=NEW" in capsys.readouterr().err


@pytest.mark.parametrize("argv,rc", [
    (["config", "check", VERBATIM], 1),
    (["config", "show", VERBATIM], 1),
    (["config", "show", "--json", SEED], 0),
])
def test_real_process_no_traceback(argv, rc):
    """The console entry point as a user runs it (this interpreter, stdout a pipe)."""
    env = dict(os.environ, XEN_REMUS_LOG="")
    proc = subprocess.Popen([sys.executable, "-m", "xen_remus_ext"] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    assert proc.returncode == rc, err
    assert b"Traceback" not in out + err
    if rc == 1:
        assert b":3:" in out + err and u"\u2019".encode("utf-8") in out + err


MIXED = (u"name = 'g'\nmemory = 256\ndisk = ['tap2:remus:10.0.0.2:9000|aio:/img/a,xvda,w',\n"
         u"        'tap2:remus:10.0.0.3:9001|aio:/img/b,xvdb,w']\n")
IPV6 = u"name = 'g'\nmemory = 256\ndisk = ['tap2:remus:fe80::2:9000|aio:/img/a,xvda,w']\n"


@pytest.mark.parametrize("text,needle", [(MIXED, u"all remus disks of a domain go to one backup"),
                                         (IPV6, u"IPv6 literal")])
def test_reverse_refuses_what_check_rejects(tmp_path, capsys, text, needle):
    cfg = tmp_path / "g.cfg"
    cfg.write_bytes(text.encode("utf-8"))
    rc, out, _ = run(["config", "check", str(cfg)], capsys)
    assert rc == 1 and needle in out
    rc, out, err = run(["config", "reverse", str(cfg), "--backup", "10.0.0.1", "-o", str(tmp_path / "o")], capsys)
    assert rc == 1 and out == u"" and not (tmp_path / "o").exists()
    assert u"refused, `config check` finds 1 error" in err and needle in err


def test_reverse_port_that_matches_nothing_and_backup_with_port(capsys):
    rc, out, err = run(["config", "reverse", SEED, "--backup", "10.0.0.1", "--port", "9001=9002"], capsys)
    assert rc == 1 and out == u"" and u"--port 9001=9002: no remus disk uses port 9001 (ports in use: 9000)" in err
    rc, out, err = run(["config", "reverse", SEED, "--backup", "10.0.0.1:9100"], capsys)
    assert rc == 1 and out == u"" and u"IPv6" not in err
    assert u"expected a host without a port, got '10.0.0.1:9100'" in err and u"--port 9000=9100" in err


@pytest.mark.parametrize("content", [b"", b"# nothing here\n\n", b"  \n"])
def test_empty_config_is_an_error_for_show_and_check(tmp_path, capsys, content):
    cfg = tmp_path / "empty.cfg"
    cfg.write_bytes(content)
    rc, out, err = run(["config", "show", str(cfg)], capsys)
    assert rc == 1 and out == u"" and u"None" not in err
    assert err.startswith(u"xen-remus: %s:0: error: the config sets nothing" % cfg)
    rc, out, err = run(["config", "check", str(cfg)], capsys)
    assert rc == 1 and u"error: the config sets nothing" in out and out.endswith(u": 1 error, 0 warnings\n")


def test_check_without_remus_disk_warns_and_show_says_not_set(tmp_path, capsys):
    cfg = tmp_path / "plain.cfg"
    cfg.write_bytes(b"memory = 256\ndisk = ['phy:/dev/vg/a,xvda,w', 'file:/srv/tools.iso,hdc:cdrom,r']\n")
    rc, out, _ = run(["config", "check", str(cfg)], capsys)
    assert rc == 0
    assert u"warning: no remus disk" in out and u"no name" not in out   # xm names it after the file
    assert out.endswith(u": 0 errors, 1 warning\n")
    xl = tmp_path / "plain-xl.cfg"
    xl.write_bytes(b"memory = 256\ndisk = ['/srv/a.img,raw,xvda,rw']\n")
    rc, out, _ = run(["config", "check", str(xl)], capsys)
    assert rc == 0 and u"warning: no name: xl create refuses a domain without one" in out
    rc, out, _ = run(["config", "show", str(cfg)], capsys)
    assert rc == 0 and u"name:    (not set)" in out and u"None" not in out
    assert u"disk:    hdc r file:/srv/tools.iso (cdrom)" in out
    rc, out, _ = run(["config", "show", "--json", str(cfg)], capsys)
    disks = json.loads(out)["disks"]
    assert [(d["vdev"], d["devtype"]) for d in disks] == [(u"xvda", u"disk"), (u"hdc", u"cdrom")]
    rc, out, _ = run(["config", "show", "--sxp", str(cfg)], capsys)
    assert u"(dev hdc:cdrom)" in out and u"(dev xvda)" in out


SXP_CD = b"(vm (name g) (memory 256) (device (vbd (uname file:/srv/tools.iso) (dev hdc:cdrom) (mode r))))\n"


@pytest.mark.parametrize("source,fmt", [(os.path.join(DATA, "xlcfg", "hvm-remus.cfg"), "xl"), (SXP_CD, "sxp")])
def test_cdrom_devtype_from_every_format(tmp_path, capsys, source, fmt):
    if source is SXP_CD:
        (tmp_path / "cd.sxp").write_bytes(source)
        source = str(tmp_path / "cd.sxp")
    rc, out, _ = run(["config", "show", "--json", "--format", fmt, source], capsys)
    assert rc == 0
    cds = [d for d in json.loads(out)["disks"] if d["devtype"] == u"cdrom"]
    assert [d["vdev"] for d in cds] == [u"hdc"]


@pytest.mark.parametrize("argv", [["config", "show"], ["config", "show", "--json"],
                                  ["config", "reverse", "--backup", "192.0.2.1"], ["config", "check"]])
def test_a_binary_file_is_named_in_the_error(argv, tmp_path, capsys):
    path = str(tmp_path / "binary.cfg")
    with open(path, "wb") as f:
        f.write(b"\xff\xfe\x00not text")
    rc, out, err = run(argv + [path], capsys)
    assert rc == 1
    text = out + err
    assert "%s:1: error: expected UTF-8 text, got byte 0xff" % path in text
    assert "<input>" not in text


def test_reverse_to_an_unwritable_place_names_that_place(tmp_path, capsys):
    cfg = tmp_path / "g.cfg"
    with io.open(str(cfg), "w", encoding="utf-8") as f:
        f.write(u'name = "g"\ndisk = [ "tap2:remus:192.0.2.2:9000|aio:/srv/g.img,xvda,w" ]\n')
    out = str(tmp_path / "missing-dir" / "x.cfg")
    rc, _, err = run(["config", "reverse", "--backup", "192.0.2.1", "-o", out, str(cfg)], capsys)
    assert rc == 1 and "%s:0: error: reverse: cannot write the file: No such file or directory" % out in err
    assert ".tmp." not in err and os.listdir(str(tmp_path)) == ["g.cfg"]


@pytest.mark.parametrize("port", ["9000=70000", "0=9001", "9000=abc", "9000"])
def test_reverse_port_out_of_range_is_a_usage_error(port, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(["config", "reverse", SEED, "--backup", "10.0.0.1", "--port", port])
    err = capsys.readouterr().err
    assert ei.value.code == 2 and "argument --port" in err and port in err
