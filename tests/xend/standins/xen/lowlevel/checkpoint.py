"""Stand-in for xen.lowlevel.checkpoint (libxenguest's Remus checkpointer).

``checkpointer().start(fd, suspend_cb, postcopy_cb, checkpoint_cb, interval,
flags)`` loops as the C module does: suspend the domain, call
``suspend_cb`` (the remus script flushes its disks there), write the memory
of this epoch to ``fd`` (one framed record, read by the xc_restore
stand-in on the backup), resume the domain, call ``postcopy_cb``, then
``checkpoint_cb``; a false result ends the loop.  The domain is suspended
and resumed through the lab host's hypervisor daemon."""
import time

import hvclient
import memimage


class error(Exception):
    pass


class checkpointer(object):
    def __init__(self):
        self.domid = None

    def open(self, domid):
        try:
            hvclient.call("xc", "domain_getinfo", [int(domid), 1], {})
        except hvclient.HvError as exc:
            raise error(str(exc))
        self.domid = int(domid)

    def start(self, fd, suspend_cb=None, postcopy_cb=None, checkpoint_cb=None, interval=0, flags=0):
        if self.domid is None:
            raise error("checkpointer: not opened")
        fileno = fd if isinstance(fd, int) else fd.fileno()
        while True:
            try:
                mem = hvclient.call("checkpoint_suspend", self.domid)
            except hvclient.HvError as exc:
                raise error(str(exc))
            if suspend_cb is not None:
                suspend_cb()
            try:
                memimage.write_record(fileno, mem)
            except OSError as exc:
                hvclient.call("checkpoint_resume", self.domid)
                raise error("checkpoint stream: %s" % exc)
            hvclient.call("checkpoint_resume", self.domid)
            if postcopy_cb is not None:
                postcopy_cb()
            if checkpoint_cb is not None and not checkpoint_cb():
                return
            if interval:
                time.sleep(interval / 1000.0)

    def close(self):
        self.domid = None
