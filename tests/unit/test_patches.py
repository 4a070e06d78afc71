"""The quilt series in patches/ against the real Xen release trees.

The trees come from the fetched Xen git mirror (``fetch github:xen-project/xen``,
at /work/.mirror/xen-project+xen/repo or ``$XEN_GIT``); tests needing it skip
with that reason when it is absent.  xend and xm cannot be imported here, so
the code each patch adds is run (on Python 2.7, the syntax of Xen's files) in
the namespace of the stand-ins: tests/fakes/xm_main.py for xm, small classes
for XendDomain and Blktap2Controller.
"""
from __future__ import absolute_import, division, print_function

import filecmp
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import six

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PATCHES = os.path.join(TOP, "patches")
MIRROR = os.environ.get("XEN_GIT", "/work/.mirror/xen-project+xen/repo")
SERIES = ("xen-4.1", "xen-4.4")


def has_mirror():
    if not os.path.isdir(MIRROR):
        return False
    rc = subprocess.call(["git", "--git-dir", MIRROR, "rev-parse", "-q", "--verify",
                          "RELEASE-4.4.4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return rc == 0


needs_mirror = pytest.mark.skipif(not has_mirror(),
                                  reason="no Xen git mirror at %s (fetch github:xen-project/xen)"
                                  % MIRROR)


def series(name):
    with open(os.path.join(PATCHES, name, "series")) as fh:
        return [ln.strip() for ln in fh if ln.strip() and not ln.startswith("#")]


def patch_text(name, patch):
    with open(os.path.join(PATCHES, name, patch)) as fh:
        return fh.read()


def touched(text):
    return re.findall(r"^--- a/(\S+)", text, re.M)


def added_lines(text):
    body = text.split("\n---\n", 1)[1]
    return [ln[1:] for ln in body.splitlines() if ln.startswith("+") and not ln.startswith("+++")]


@pytest.mark.parametrize("name", SERIES)
def test_series_is_numbered_one_change_per_patch_additions_only(name):
    names = series(name)
    want = ["0001-xm-register-remus-subcommands.patch",
            "0002-xend-add-remus-domain-methods.patch",
            "0003-xend-blktap2-migrate-hook.patch"]
    if name == "xen-4.1":    # a fix xend 4.1 lacks (4.4 has it): tapdisk-list of remus disks
        want.append("0004-xend-tapdisk-list-remus-args.patch")
    want += ["0005-remus-fifo-of-a-stacked-remus-disk.patch", "0006-xend-blktap2-log-disk-type.patch",
             "0007-xend-hold-a-marked-remus-backup.patch", "0008-remus-mark-the-stream-for-a-held-backup.patch",
             "0009-remus-qdisc-of-the-requested-device.patch"]
    assert names == want
    seen = set()
    for patch in names:
        text = patch_text(name, patch)
        files = touched(text)
        assert len(files) == 1 and files[0].startswith("tools/python/xen/"), patch
        assert files[0] not in seen or patch.startswith(("0004-", "0006-"))
        seen.add(files[0])
        body = text.split("\n---\n", 1)[1]
        removed = [ln for ln in body.splitlines() if ln.startswith("-") and not ln.startswith("---")]
        assert removed == [], "%s removes Xen lines" % patch
        assert text.startswith("Subject: ")


def extract(tag, dest):
    """The files the series touch (and xen/Makefile) of ``tag``, as a partial tree."""
    paths = ["xen/Makefile"]
    for name in SERIES:
        for patch in series(name):
            paths += touched(patch_text(name, patch))
    tar = os.path.join(str(dest), "t.tar")
    with open(tar, "wb") as fh:
        subprocess.check_call(["git", "--git-dir", MIRROR, "archive", tag] + sorted(set(paths)),
                              stdout=fh)
    root = os.path.join(str(dest), tag)
    with tarfile.open(tar) as tf:
        tf.extractall(root)
    return root


def check_patches(*args):
    proc = subprocess.Popen([os.path.join(TOP, "tools", "check-patches.sh")] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate()[0]
    return proc.returncode, six.ensure_text(out)


def tree_digest(root):
    out = {}
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


@needs_mirror
@pytest.mark.parametrize("tag, name", [("RELEASE-4.1.0", "xen-4.1"), ("RELEASE-4.1.6.1", "xen-4.1"),
                                       ("RELEASE-4.4.0", "xen-4.4"), ("RELEASE-4.4.4", "xen-4.4")])
def test_series_applies_to_release_tree(tmp_path, tag, name):
    root = extract(tag, tmp_path)
    before = tree_digest(root)
    rc, out = check_patches(root)
    assert rc == 0, out
    count = 9 if name == "xen-4.1" else 8      # 4.1 also carries the TapdiskController.list fix
    assert "ok: %s: patches/%s (%d patches" % (root, name, count) in out
    assert tree_digest(root) == before  # the given tree is never changed


@needs_mirror
def test_bare_tools_python_dir_is_accepted(tmp_path):
    root = extract("RELEASE-4.4.4", tmp_path)
    rc, out = check_patches(os.path.join(root, "tools", "python"))
    assert rc == 0, out
    # without xen/Makefile the candidates are tried in turn; the 4.1 series
    # also fits 4.4 (same context, other line numbers)
    assert re.search(r"patches/xen-4\.(1 \(9|4 \(8) patches", out), out


@needs_mirror
def test_changed_context_fails(tmp_path):
    root = extract("RELEASE-4.1.0", tmp_path)
    main_py = os.path.join(root, "tools", "python", "xen", "xm", "main.py")
    with open(main_py) as fh:
        text = fh.read()
    with open(main_py, "w") as fh:
        fh.write(text.replace('    "vbd-list": "block-list",\n', ""))
    rc, out = check_patches(root)
    assert rc == 1
    assert "does not apply" in out


@needs_mirror
def test_regen_reproduces_the_committed_patches(tmp_path):
    """The committed series is exactly what regen.sh makes from the release trees."""
    copy = os.path.join(str(tmp_path), "patches")
    os.mkdir(copy)
    shutil.copy(os.path.join(PATCHES, "regen.sh"), copy)
    subprocess.check_call([os.path.join(copy, "regen.sh"), MIRROR], stdout=subprocess.PIPE)
    for sub in SERIES + ("alt",):
        cmp = filecmp.dircmp(os.path.join(PATCHES, sub), os.path.join(copy, sub))
        assert not cmp.left_only and not cmp.right_only, sub
        for f in cmp.common_files:
            with open(os.path.join(PATCHES, sub, f)) as a, open(os.path.join(copy, sub, f)) as b:
                assert a.read() == b.read(), "%s/%s differs from regen.sh's" % (sub, f)


py2_only = pytest.mark.skipif(sys.version_info[0] != 2,
                              reason="the added lines are Python 2 (the syntax of Xen's files); "
                                     "run by the 2.7 pass")


@py2_only
def test_xm_patch_code_registers_into_xm(tmp_path):
    from tests.fakes import xm_main as fake_xm
    six.moves.reload_module(fake_xm)
    code = "\n".join(added_lines(patch_text("xen-4.1", series("xen-4.1")[0])))
    exec(compile(code, "0001", "exec"), vars(fake_xm))
    assert "remus-failback" in fake_xm.all_commands
    assert "remus-status" in fake_xm.commands
    assert fake_xm.SUBCOMMAND_HELP["remus-resync"][0] == "<Domain> <Host> [options]"


@py2_only
def test_xend_patches_code_installs(tmp_path):
    import logging

    class XendDomain(object):
        pass

    class Blktap2Controller(object):
        def migrate(self, deviceConfig, network, dst, step, domName):
            return 0

        def recover_migrate(self, deviceConfig, network, dst, step, domName):
            return 0

    ns = {"XendDomain": XendDomain, "log": logging.getLogger("xend-test"),
          "Blktap2Controller": Blktap2Controller}
    for patch in series("xen-4.4")[1:3]:     # 0005 (xen.remus): tests/unit/test_remus_fifo_patch.py
        code = "\n".join(added_lines(patch_text("xen-4.4", patch)))
        exec(compile(code, patch, "exec"), ns)
    assert callable(getattr(XendDomain, "domain_remus_failback", None))
    assert callable(getattr(XendDomain, "domain_remus_status", None))
    assert getattr(Blktap2Controller.migrate, "_xen_remus_ext", False)


@py2_only
def test_tapdisk_list_patch_reads_remus_args():
    """0004 (4.1): TapdiskController.list as tap-ctl list prints a remus disk."""
    code = ("class TapdiskController(object):\n"
            "    TAP_DEV = '/dev/xen/blktap-2/tapdev'\n"
            "    OUT = ''\n"
            "    class Tapdisk(object):\n"
            "        def __init__(self):\n"
            "            self.pid, self.minor, self.state = None, -1, None\n"
            "            self.dtype, self.image, self.device = '', None, None\n"
            "    @staticmethod\n"
            "    def exc(*args):\n"
            "        return TapdiskController.OUT\n")
    code += "\n".join(added_lines(patch_text("xen-4.1", "0004-xend-tapdisk-list-remus-args.patch")))
    ns = {}
    exec(compile(code, "0004", "exec"), ns)
    tc = ns["TapdiskController"]
    tc.OUT = ("pid=2345 minor=0 state=0 args=remus:192.0.2.2:9000\n"
              "pid=2346 minor=1 state=0 args=aio:/var/lib/xen/images/a b.img\n"
              "minor=2\n")
    got = [(t.pid, t.minor, t.state, t.dtype, t.image, t.device) for t in tc.list()]
    assert got == [("2345", 0, "0", "remus", "192.0.2.2:9000", "/dev/xen/blktap-2/tapdev0"),
                   ("2346", 1, "0", "aio", "/var/lib/xen/images/a b.img", "/dev/xen/blktap-2/tapdev1"),
                   (None, 2, None, "", None, "/dev/xen/blktap-2/tapdev2")]
    tc.OUT = ""
    assert tc.list() == []


@needs_mirror
def test_patch_route_without_quilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CHECK_PATCHES_NO_QUILT", "1")
    root = extract("RELEASE-4.1.3", tmp_path)
    rc, out = check_patches(root)
    assert rc == 0, out
    assert "(9 patches, patch -p1, no fuzz)" in out
