# -*- coding: utf-8 -*-
"""``xen-remus config show|check|reverse`` and the stage-1 config demo."""
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
        u"uname": SEED_UNAME, u"vdev": u"hda", u"mode": u"w",
        u"remus": {u"host": u"hypervisor2-IP-addr", u"port": 9000, u"driver": u"aio",
                   u"path": u"/var/lib/xen/images/hvmguest.x86-64.img"}}]


@pytest.mark.parametrize("parts", [("xlcfg", "pv.cfg"), ("sxp", "hvmdomu-xm-list-l.sxp"), ("xml", "hvmdomu.xml")])
def test_show_json_other_formats_have_the_schema(parts, capsys):
    rc, out, _ = run(["config", "show", "--json", os.path.join(DATA, *parts)], capsys)
    obj = json.loads(out)
    assert rc == 0 and set(obj) == {"name", "memory", "builder", "kernel", "vcpus", "vifs", "disks"}
    assert isinstance(obj["memory"], int) and obj["builder"] in ("linux", "hvm")
    for d in obj["disks"]:
        assert set(d) == {"uname", "vdev", "mode", "remus"}


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
        SEED + u": 0 errors, 1 warning"]


def test_usage_errors_exit_2(capsys):
    for argv in (["config", "check"], ["config", "reverse", SEED], ["config", "show", "--json", "--sxp", SEED],
                 ["config", "check", "--format", "yaml", SEED], ["config"]):
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
    rc, _, err = run(["config", "reverse", str(cfg), "--backup", "h", "--port", "nine"], capsys)
    assert rc == 1 and "--port: expected OLD=NEW" in err


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
