"""Value types shared by every layer (docs/conventions.md, value types).

Parsers turn cfg text, SXP and Xen-API XML into these right away; nothing
else crosses module boundaries.  Each type is a namedtuple that validates in
``__new__``.  Field meanings follow xm (docs/xen-facts.md section 2): ``builder``
is ``"linux"`` or ``"hvm"``, ``memory`` is MiB, disk fields are what xm's
``preprocess_disk`` leaves (``uname``, ``dev`` as ``vdev``, ``mode``,
optional ``backend`` and ``protocol``), with the device type xm writes as a
``:cdrom`` suffix of ``dev`` held apart in ``devtype``, as libxl does.
"""
from __future__ import absolute_import, division, print_function

import collections

from xen_remus_ext.compat import integer_types, string_types
from xen_remus_ext.errors import ValidationError

BUILDERS = ("linux", "hvm")
DISK_MODES = ("r", "w", "w!")
DEVTYPES = ("disk", "cdrom")


def _r(value, limit=120):
    """``repr`` of a value for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else "%s... (%d characters)" % (text[:limit], len(text))


class RemusSpec(collections.namedtuple("RemusSpec", "host port driver path")):
    """The replication part of a remus uname: ``remus:HOST:PORT|DRIVER:PATH``.

    ``host`` is the BACKUP's address (block-remus binds it on the backup and
    connects to it on the primary); ``port`` is mandatory (an int once valid,
    the raw text while a parser reports it); ``driver`` is the tapdisk driver
    of the image, the lowest layer of the stack (``aio`` usually; other
    layers such as ``log:NAME`` may sit between), and ``path`` the image or
    device.
    """

    __slots__ = ()

    def __new__(cls, host, port, driver, path):
        for name, val in (("host", host), ("driver", driver), ("path", path)):
            if not isinstance(val, string_types):
                raise ValidationError("remus %s: expected a string, got %s" % (name, _r(val)))
        if not isinstance(port, integer_types + string_types) and port is not None:
            raise ValidationError("remus port: expected an int, got %s" % (_r(port),))
        return super(RemusSpec, cls).__new__(cls, host, port, driver, path)

    def to_dict(self):
        return {"host": self.host, "port": self.port, "driver": self.driver, "path": self.path}


class ReplicatedDisk(collections.namedtuple("ReplicatedDisk", "vdev control timeout")):
    """A disk that ``xen-remus replicate`` replicates checkpoint by checkpoint
    under xl's memory-only Remus (docs/design/xl-disk-replication.md).

    ``vdev`` names the domain's disk (its backend device is the NBD device of
    ``xen-remus replicate serve``); ``control`` is that server's control
    socket, at the same path on whichever host runs the domain; ``timeout``
    the seconds of silence after which the backup fails over.
    """

    __slots__ = ()

    def __new__(cls, vdev, control, timeout=3.0):
        for name, val in (("vdev", vdev), ("control", control)):
            if not isinstance(val, string_types) or not val:
                raise ValidationError("replicated disk %s: expected a non-empty string, got %s" % (name, _r(val)))
        if not control.startswith("/"):
            raise ValidationError("replicated disk %s: expected an absolute control socket path, got %s"
                                  % (vdev, _r(control)))
        if isinstance(timeout, bool) or not isinstance(timeout, integer_types + (float,)) \
                or not 0.5 <= timeout <= 3600:
            raise ValidationError("replicated disk %s: expected a timeout from 0.5 to 3600 seconds, got %s"
                                  % (vdev, _r(timeout)))
        return super(ReplicatedDisk, cls).__new__(cls, vdev, control, float(timeout))

    def to_dict(self):
        return {"vdev": self.vdev, "control": self.control, "timeout": self.timeout}


class DiskSpec(collections.namedtuple(
        "DiskSpec", "uname vdev mode backend protocol remus line devtype")):
    """One disk of a domain, as xm's disk list holds it.

    ``vdev`` is the guest device name alone (``hdc``, ``xvda``, xm's
    ``ioemu:hda``); ``devtype`` is ``disk`` or ``cdrom`` (xm's ``hdc:cdrom``,
    xl's ``devtype=cdrom``, Xen-API's ``type="CD"``).  ``remus`` is a
    :class:`RemusSpec` or None; ``line`` is the source line (or None) so
    that checks can point at it.
    """

    __slots__ = ()

    def __new__(cls, uname, vdev, mode, backend=None, protocol=None, remus=None, line=None, devtype="disk"):
        if not isinstance(uname, string_types):
            raise ValidationError("disk uname: expected a string, got %s" % (_r(uname),))
        if remus is not None and not isinstance(remus, RemusSpec):
            raise ValidationError("disk remus: expected RemusSpec, got %s" % (_r(remus),))
        if devtype not in DEVTYPES:
            raise ValidationError("disk devtype: expected disk or cdrom, got %s" % (_r(devtype),))
        if isinstance(vdev, string_types):
            for suffix in DEVTYPES:   # xm's and xend's 'hdc:cdrom', 'hda:disk'
                if vdev.endswith(":" + suffix):
                    vdev = vdev[:-len(suffix) - 1]
                    devtype = "cdrom" if "cdrom" in (suffix, devtype) else "disk"
        return super(DiskSpec, cls).__new__(cls, uname, vdev, mode, backend, protocol, remus, line, str(devtype))

    @property
    def is_cdrom(self):
        return self.devtype == "cdrom"

    @property
    def xm_dev(self):
        """``vdev`` as xm and xend write it: ``hdc:cdrom`` for a cdrom."""
        if self.vdev is not None and self.devtype == "cdrom":
            return self.vdev + ":cdrom"
        return self.vdev

    @property
    def is_remus(self):
        return self.remus is not None

    @property
    def path(self):
        """Host path of the backing image or device, when known."""
        if self.remus is not None:
            return self.remus.path
        rest = self.uname.split(":")
        return rest[-1] if rest else self.uname

    def to_dict(self):
        return {
            "uname": self.uname, "vdev": self.vdev, "mode": self.mode, "devtype": self.devtype,
            "remus": self.remus.to_dict() if self.remus is not None else None,
        }


class DomainConfig(collections.namedtuple(
        "DomainConfig", "name memory builder kernel vcpus vifs disks options source format")):
    """A domain's configuration, whatever the file format it came from.

    ``options`` holds every other setting the file made (xm keeps unknown
    names too), ``source`` the path it came from, ``format`` one of
    ``xm``, ``xl``, ``sxp``, ``xml``.
    """

    __slots__ = ()

    def __new__(cls, name=None, memory=None, builder="linux", kernel=None, vcpus=1,
                vifs=(), disks=(), options=None, source=None, format=None):
        if memory is not None and not isinstance(memory, integer_types):
            raise ValidationError("memory: expected an int (MiB), got %s" % (_r(memory),))
        if builder not in BUILDERS:
            raise ValidationError("builder: expected one of %s, got %s" % (", ".join(BUILDERS), _r(builder)))
        return super(DomainConfig, cls).__new__(
            cls, name, memory, builder, kernel, vcpus, tuple(vifs), tuple(disks),
            dict(options or {}), source, format)

    @property
    def remus_disks(self):
        return [d for d in self.disks if d.remus is not None]

    def to_dict(self):
        return {
            "name": self.name, "memory": self.memory, "builder": self.builder,
            "kernel": self.kernel, "vcpus": self.vcpus, "vifs": list(self.vifs),
            "disks": [d.to_dict() for d in self.disks],
        }


class DomainInfo(collections.namedtuple("DomainInfo", "domid name state memory host")):
    """A running domain as a toolstack lists it (``xm list`` / ``xl list``).

    ``state`` is xm's six-letter string (``r-----``, ``-b----``, ``--p---`` ...)
    or a word (``running``, ``paused``, ``blocked``); ``memory`` MiB.
    """

    __slots__ = ()

    def __new__(cls, domid, name, state="", memory=0, host=None):
        if not isinstance(domid, integer_types):
            raise ValidationError("domid: expected an int, got %s" % (_r(domid),))
        return super(DomainInfo, cls).__new__(cls, domid, name, state, memory, host)

    @property
    def paused(self):
        return "p" in self.state[:3] if len(self.state) == 6 else self.state == "paused"


class Extent(collections.namedtuple("Extent", "offset length")):
    """A byte range of a disk: ``[offset, offset + length)``."""

    __slots__ = ()

    def __new__(cls, offset, length):
        if offset < 0 or length < 0:
            raise ValidationError("extent: expected offset, length >= 0, got %d, %d" % (offset, length))
        return super(Extent, cls).__new__(cls, offset, length)

    @property
    def end(self):
        return self.offset + self.length
