"""``xm-remus``: xm with the remus subcommands registered.

Installed as ``xm-remus`` (or in place of ``/usr/sbin/xm``), it imports
``xen.xm.main``, registers our subcommands into its tables and hands over to
``xen.xm.main.main(argv)``, exactly what Xen's own ``xm`` script does after
the import (docs/xen-facts.md section 1).  Importing ``xen.xm.main`` reads
xend-config but does not contact xend.
"""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.xm import register as xm_register


def load_xm_main():
    """:returns: the ``xen.xm.main`` module, or None when xend's Python
    toolstack is not installed for this interpreter."""
    try:
        from xen.xm import main as xm_main
    except ImportError:
        return None
    return xm_main


def main(argv=None, xm_main=None):
    """Run xm with our subcommands.  Never returns normally when xm runs:
    ``xen.xm.main.main`` ends with ``sys.exit``.

    :returns: 1 when xm is missing
    """
    argv = sys.argv if argv is None else list(argv)
    if xm_main is None:
        xm_main = load_xm_main()
    if xm_main is None:
        sys.stderr.write("xm-remus: cannot import xen.xm.main: xend's Python toolstack "
                         "(Xen 4.1-4.4) is not installed for %s; on xl hosts use "
                         "'xen-remus protect|failback|resync-domain|status'\n" % (sys.executable,))
        return 1
    xm_register.register(xm_main)
    xm_main.main(argv)
    return 0


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
