"""Stand-in for xen.lowlevel.checkpoint (libxenguest's Remus checkpointer).

``checkpointer().start(fd, suspend_cb, postcopy_cb, checkpoint_cb, interval,
flags)`` loops as the C module does: suspend the domain, call
``suspend_cb`` (the remus script flushes its disks there), write the memory
of this epoch to ``fd`` (one framed record, read by the xc_restore
stand-in on the backup), call ``postcopy_cb``, resume the domain, then
``checkpoint_cb``; a false result ends the loop.  The domain is suspended
and resumed through the lab host's hypervisor daemon.

An HVM domain (no PV drivers: ``HVM_PARAM_CALLBACK_IRQ`` is 0) also has its
device model driven through xenstore as libcheckpoint.c does: dirty logging
switched on at start (``device-model/DOMID/logdirty/cmd``, answered in
``.../ret``), ``command = save`` and a wait for ``state = paused`` at each
suspend, ``command = continue`` at each resume, and after each resume the
saved state (``/var/lib/xen/qemu-save.DOMID``) sent as
``RemusDeviceModelState``."""
import time

import hvclient
import memimage

HVM_PARAM_CALLBACK_IRQ = 0


class error(Exception):
    pass


def _xs():
    from xen.lowlevel import xs
    return xs.xs()


class checkpointer(object):
    def __init__(self):
        self.domid = None
        self.hvm = False
        self.xs = None

    def open(self, domid):
        try:
            info = hvclient.call("xc", "domain_getinfo", [int(domid), 1], {})
            self.hvm = bool(info and info[0]["hvm"]) and not hvclient.call(
                "xc", "hvm_get_param", [int(domid), HVM_PARAM_CALLBACK_IRQ], {})
        except hvclient.HvError as exc:
            raise error(str(exc))
        self.domid = int(domid)
        if self.hvm:
            self.xs = _xs()

    # -- the device model (libcheckpoint.c) ----------------------------------
    def _dm(self, key):
        return "/local/domain/0/device-model/%d/%s" % (self.domid, key)

    def _logdirty(self, cmd):
        self.xs.write("", self._dm("logdirty/cmd"), cmd)
        deadline = time.time() + 10
        while self.xs.read("", self._dm("logdirty/ret")) != cmd:
            if time.time() > deadline:
                raise error("qemu logdirty command failed")
            time.sleep(0.005)

    def _suspend_qemu(self):
        self.xs.write("", self._dm("command"), "save")
        deadline = time.time() + 10
        while self.xs.read("", self._dm("state")) != "paused":
            if time.time() > deadline:
                raise error("error reading QEMU state: not paused after 10 s")
            time.sleep(0.001)

    def _send_qemu(self, fileno):
        path = "/var/lib/xen/qemu-save.%d" % self.domid
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (IOError, OSError) as exc:
            raise error("error getting QEMU state file status: %s" % exc)
        memimage.write_qemu(fileno, data)

    def start(self, fd, suspend_cb=None, postcopy_cb=None, checkpoint_cb=None, interval=0, flags=0):
        if self.domid is None:
            raise error("checkpointer: not opened")
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if self.hvm:
            self._logdirty("enable")
        try:
            self._loop(fileno, suspend_cb, postcopy_cb, checkpoint_cb, interval)
        finally:
            if self.hvm:
                try:
                    self._logdirty("disable")
                except error:
                    pass

    def _loop(self, fileno, suspend_cb, postcopy_cb, checkpoint_cb, interval):
        while True:
            try:
                mem = hvclient.call("checkpoint_suspend", self.domid)
            except hvclient.HvError as exc:
                raise error(str(exc))
            if self.hvm:
                self._suspend_qemu()
            if suspend_cb is not None:
                suspend_cb()
            try:
                memimage.write_record(fileno, mem)
            except OSError as exc:
                self._resume()
                raise error("checkpoint stream: %s" % exc)
            if postcopy_cb is not None:
                postcopy_cb()
            self._resume()
            if self.hvm:
                try:
                    self._send_qemu(fileno)
                except OSError as exc:
                    raise error("checkpoint stream: %s" % exc)
            if checkpoint_cb is not None and not checkpoint_cb():
                return
            if interval:
                time.sleep(interval / 1000.0)

    def _resume(self):
        hvclient.call("checkpoint_resume", self.domid)
        if self.hvm:
            self.xs.write("", self._dm("command"), "continue")
            # libcheckpoint.c does not wait here; a real qemu-dm answers within
            # microseconds.  The stand-in, under the lab's load, may not: the next
            # suspend would then see this round's "paused" and send a stale state.
            deadline = time.time() + 10
            while self.xs.read("", self._dm("state")) != "running":
                if time.time() > deadline:
                    raise error("qemu-dm: not running 10 s after continue")
                time.sleep(0.001)

    def close(self):
        self.domid = None
        self.xs = None
