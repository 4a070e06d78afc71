# -*- coding: utf-8 -*-
"""Stage-1 demo: show, check and reverse the remus-fu seed HVM cfg.

Runs the real ``xen-remus config`` commands on the blog's cfg (the verbatim
copy with typographic quotes and the fixed one), in a temporary directory:

1. ``config check`` on the verbatim cfg: exit 1, line 3, the ’ character;
2. ``config show`` and ``config show --json`` on the fixed cfg;
3. ``config check`` on the fixed cfg: no errors, one warning (a host name);
4. ``config reverse --backup hypervisor1-IP-addr``: the diff is one line;
   reversing back gives the original bytes.

``python -m xen_remus_ext.demo_config`` (exit 0 when every step behaved).
"""
from __future__ import absolute_import, division, print_function

import difflib
import io
import os
import shutil
import sys
import tempfile

from xen_remus_ext.cli import config_cmd
from xen_remus_ext.cli import main as cli_main

#: the cfg as remus-fu.txt prints it (typographic quotes, lost indentation)
SEED_VERBATIM = u"""import os, re
arch = os.uname()[4]
if re.search(\u201964\u2032, arch):
arch_libdir = \u2018lib64\u2032
else:
arch_libdir = \u2018lib\u2019

kernel = \u201c/usr/lib/xen/boot/hvmloader\u201d
builder=\u2019hvm\u2019

memory = 256
name = \u201chvmdomuname\u201d
vif = [ '' ]
disk = ['tap:remus:hypervisor2-IP-addr:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img,hda,w']

device_model = \u2018/usr/\u2019 + arch_libdir + \u2018/xen/bin/qemu-dm\u2019

boot=\u201dc\u201d
sdl=0
vnc=1
vfb = [ 'type=vnc,vncpasswd=passw,vnclisten=0.0.0.0,vncdisplay=2' ]

serial=\u2019pty\u2019
"""

#: the same with ASCII quotes and the if/else bodies indented
SEED_FIXED = u"""import os, re
arch = os.uname()[4]
if re.search('64', arch):
    arch_libdir = 'lib64'
else:
    arch_libdir = 'lib'

kernel = "/usr/lib/xen/boot/hvmloader"
builder='hvm'

memory = 256
name = "hvmdomuname"
vif = [ '' ]
disk = ['tap:remus:hypervisor2-IP-addr:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img,hda,w']

device_model = '/usr/' + arch_libdir + '/xen/bin/qemu-dm'

boot="c"
sdl=0
vnc=1
vfb = [ 'type=vnc,vncpasswd=passw,vnclisten=0.0.0.0,vncdisplay=2' ]

serial='pty'
"""


def _say(text):
    config_cmd.write(sys.stdout, text + u"\n")
    sys.stdout.flush()


def _run(argv):
    _say(u"\n$ xen-remus %s" % u" ".join(argv))
    sys.stdout.flush()
    rc = cli_main.main(list(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    _say(u"(exit %d)" % rc)
    return rc


def _write(path, text):
    with io.open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _read(path):
    with io.open(path, "r", encoding="utf-8", newline="") as f:
        return f.read()


def main(argv=None):
    """Run the demo; :returns: 0 when every step gave the expected result."""
    tmp = tempfile.mkdtemp(prefix="xen-remus-demo-")
    ok = True
    try:
        verbatim = os.path.join(tmp, "hvmdomu-verbatim.cfg")
        fixed = os.path.join(tmp, "hvmdomu.cfg")
        _write(verbatim, SEED_VERBATIM)
        _write(fixed, SEED_FIXED)
        _say(u"== 1. The remus-fu cfg as the blog prints it: typographic quotes, lost indentation")
        ok &= _run(["config", "check", verbatim]) == 1
        _say(u"\n== 2. The same cfg with ASCII quotes, as xm evaluates it (without running it)")
        ok &= _run(["config", "show", fixed]) == 0
        ok &= _run(["config", "show", "--json", fixed]) == 0
        _say(u"\n== 3. Validation: no errors; a warning for the host name")
        ok &= _run(["config", "check", fixed]) == 0
        _say(u"\n== 4. After failover the domain runs on hypervisor2; point Remus back at hypervisor1")
        back = os.path.join(tmp, "hvmdomu-on-hypervisor2.cfg")
        ok &= _run(["config", "reverse", fixed, "--backup", "hypervisor1-IP-addr", "-o", back]) == 0
        before, after = _read(fixed), _read(back)
        diff = u"".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True),
                                             "hvmdomu.cfg", "hvmdomu-on-hypervisor2.cfg"))
        _say(diff.rstrip(u"\n"))
        again = os.path.join(tmp, "hvmdomu-again.cfg")
        ok &= _run(["config", "reverse", back, "--backup", "hypervisor2-IP-addr", "-o", again]) == 0
        same = _read(again) == before
        _say(u"reverse twice gives the original bytes: %s" % ("yes" if same else "NO"))
        ok &= same
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(u"\nconfig demo: %s" % ("every step as expected" if ok else "UNEXPECTED RESULT"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
