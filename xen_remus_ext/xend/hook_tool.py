"""The external-migration-tool process: ``xen-remus hook -type ... -step ...``.

Shared by ``xen-remus hook`` and the lean ``python -m xen_remus_ext.xend.hook_tool``
(which skips building the whole ``xen-remus`` parser: xend runs the tool once
per device and step, some of it while the domain is suspended).  Exit status
0 lets xend go on; non-zero makes xend fail the migration (``VmError``
"Migration tool returned N") and recover.
"""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.errors import XenRemusError
from xen_remus_ext.xend import hook as migrate


def run(call, out=None, err=None, delta_fn=None):
    """Run one tool call; :returns: the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = migrate.apply_step(call, delta_fn=delta_fn)
    except XenRemusError as exc:
        err.write("xen-remus hook: %s step %d %s -> %s: %s\n"
                  % (call.devclass, call.step, call.domname, call.host, exc))
        return 1
    out.write("xen-remus hook: %s\n" % report)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        call = migrate.parse_args(argv)
    except XenRemusError as exc:
        sys.stderr.write("xen-remus hook: %s\n" % exc)
        return 2
    if migrate.plan_step(call) != migrate.NOTHING:
        from xen_remus_ext import log as xlog
        xlog.setup()
    return run(call)


if __name__ == "__main__":
    sys.exit(main())
