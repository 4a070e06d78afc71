"""Disk specifications: xm's, xl's and the Remus uname inside them.

Facts (docs/xen-facts.md sections 2 and 6):

* xm (create.py ``preprocess_disk``): ``UNAME,VDEV,MODE[,BACKEND[,PROTOCOL]]``
  split on every ``,`` into 3 to 5 fields, NOT stripped; so a uname may hold
  ``:`` and ``|`` but never ``,``.  xend's blkif accepts modes ``r w w!``.
* Remus unames (blktap2): ``tap:remus:HOST:PORT|DRIVER:PATH``,
  ``tap2:remus:...``, ``tap2:tapdisk:remus:...``, ``tap:tapdisk:remus:...``.
  tapdisk splits its parameters on ``|`` (remus on top, the driver below)
  and block-remus splits ``HOST:PORT`` at the first ``:``.  HOST is the
  BACKUP's address, PORT is mandatory, tapdisk takes the first IPv4
  address getaddrinfo gives.
* xl (docs/misc/xl-disk-configuration.txt, 4.5): comma-separated
  ``key=value`` pairs, flags and positional ``target, format, vdev,
  access``; ``target=`` eats the rest of the spec; the deprecated
  ``[prefix:]target,vdev[:devtype],access`` form is xm's.

Everything here is pure text work; checks live in :mod:`config.check`.
"""
from __future__ import absolute_import, division, print_function

import re

from xen_remus_ext import model
from xen_remus_ext.compat import string_types
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError

#: uname prefixes that carry a remus replication spec, longest first
REMUS_PREFIXES = ("tap2:tapdisk:remus:", "tap:tapdisk:remus:", "tap2:remus:", "tap:remus:")

#: tapdisk2 driver names (tapdisk-disktype.c) and what xend's blktap2 accepts
TAPDISK_DRIVERS = ("aio", "sync", "vmdk", "vhdsync", "vhd", "ram", "qcow", "bc", "log", "remus", "vhdi")
XEND_BLKTAP2_TYPES = ("aio", "ram", "qcow", "vhd", "remus")

XL_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed")
XL_FLAGS = ("cdrom", "direct-io-safe", "discard", "no-discard")
XL_KEYS = ("target", "format", "vdev", "access", "devtype", "backend", "backendtype",
           "script", "colo", "colo-host", "colo-port", "colo-export", "active-disk", "hidden-disk")
_XL_POSITIONAL = ("target", "format", "vdev", "access")
_XL_ACCESS = {"ro": "r", "r": "r", "rw": "w", "w": "w", "": "w"}

_VDEV_RE = re.compile(r"^(?:ioemu:)?(?:hd|sd|xvd)[a-z]+[0-9]*(?::(?:disk|cdrom))?$|^[0-9]+$")


#: Which xend device controller an xm cfg's disk prefix reaches, by release
#: (xm/create.py ``configure_disks`` picks the device class from the prefix,
#: XendDevices maps the class to a controller).  Read in the 4.1.6.1 and
#: 4.4.4 sources: ``tap2:`` -> class ``tap2`` -> Blktap2Controller (blktap2,
#: which has the remus driver); ``tap:`` -> class ``tap`` -> BlktapController
#: (blktap1: aio, sync, vmdk, ram, qcow, qcow2, ioemu; no remus).  Xen 4.0
#: sent ``tap:`` to blktap2 as well; 4.1.0 gave ``tap:`` back to blktap1.
#: Before 4.0 there is no blktap2, so no remus disk at all.
XEN_ROUTES = (
    # (prefix, first release, last release or None, controller, can remus)
    ("tap2:", (4, 0), None, "Blktap2Controller (blktap2)", True),
    ("tap:", (4, 0), (4, 0), "Blktap2Controller (blktap2)", True),
    ("tap:", (4, 1), None, "BlktapController (blktap1, no remus driver)", False),
)


def parse_xen_version(text):
    """``"4.1.6.1"`` -> ``(4, 1, 6, 1)``.  :raises ValueError: not N.N[.N...]"""
    if not re.match(r"^[0-9]{1,3}(\.[0-9]{1,3}){1,3}$", text or ""):
        raise ValueError("expected a Xen release such as 4.1 or 4.4.4, got %s" % q(text))
    return tuple(int(p) for p in text.split("."))


def xen_route(uname, version):
    """:returns: ``(controller, can_remus)`` for an xm cfg's ``uname`` on
    Xen ``version`` (a tuple), or None when it is not a ``tap``/``tap2``
    disk.  Releases before 4.0 have no blktap2: ``(None, False)``."""
    for prefix, first, last, controller, ok in XEN_ROUTES:
        if uname.startswith(prefix):
            major = tuple(version[:2])
            if major < (4, 0):
                return None, False
            if major >= first and (last is None or major <= last):
                return controller, ok
    return None


def remus_prefix(uname):
    """:returns: the remus prefix ``uname`` starts with, or None."""
    for prefix in REMUS_PREFIXES:
        if uname.startswith(prefix):
            return prefix
    return None


def split_host_port(hostport):
    """Split ``HOST:PORT`` the way a person means it.

    block-remus splits at the first ``:``; for an IPv6 literal (``[::1]:9000``
    or bare ``fe80::1:9000``) we return the whole address as host so that
    ``check`` can name it.  :returns: ``(host, port_text or None)``.
    """
    if hostport.startswith("["):
        end = hostport.find("]")
        if end > 0:
            rest = hostport[end + 1:]
            return hostport[1:end], (rest[1:] if rest.startswith(":") else None)
    if hostport.count(":") > 1:
        host, port = hostport.rsplit(":", 1)
        return host, port
    if ":" in hostport:
        host, port = hostport.split(":", 1)
        return host, port
    return hostport, None


def parse_remus_uname(uname):
    """Parse the remus part of a disk uname.

    :param uname: e.g. ``tap:remus:10.0.0.2:9000|aio:/var/lib/xen/images/g.img``
    :returns: :class:`model.RemusSpec` (port an int when it is a decimal in
        1..65535, otherwise the raw text, None when absent) or None when
        ``uname`` is not a remus uname
    """
    if not isinstance(uname, string_types):
        return None
    prefix = remus_prefix(uname)
    if prefix is None:
        return None
    rest = uname[len(prefix):]
    if "|" in rest:
        hostport, lower = rest.split("|", 1)
    else:
        hostport, lower = rest, ""
    host, port = split_host_port(hostport)
    if port is not None and port.isdigit() and 0 < int(port) < 65536:
        port = int(port)
    image = lower.rsplit("|", 1)[-1]     # remus:H:P|log:NAME|aio:PATH: the image is the lowest layer
    if ":" in image:
        driver, path = image.split(":", 1)
    else:
        driver, path = image, ""
    return model.RemusSpec(host, port, driver, path)


def log_layer(uname):
    """The NAME of blktap2's ``log`` driver in a tapdisk stack
    (``tap2:remus:H:P|log:NAME|aio:PATH``), or None when the stack has none.
    That driver keeps a bitmap of the sectors written (a dirty tracker,
    trackers/blktap2_log.py)."""
    if not isinstance(uname, string_types):
        return None
    cls, _, stack = uname.partition(":")
    if cls not in ("tap", "tap2"):
        return None
    for sub in ("tapdisk:", "ioemu:"):
        if stack.startswith(sub):
            stack = stack[len(sub):]
    for layer in stack.split("|"):
        driver, sep, name = layer.partition(":")
        if driver == "log" and sep and name:
            return name
    return None


#: uname prefixes that name a backend or a driver, not part of the path
_PATH_PREFIXES = ("phy", "file", "tap", "tap2", "tapdisk") + TAPDISK_DRIVERS


def uname_path(uname):
    """The image or device path of a disk uname: ``file:/p``, ``phy:/dev/x``,
    ``tap2:aio:/p``, ``tap:tapdisk:aio:/p``, and for a stack
    (``remus:H:P|aio:/p``, ``log:|aio:/p``) the lowest driver's path."""
    spec = parse_remus_uname(uname)
    if spec is not None:
        return spec.path
    rest = uname.split("|")[-1]
    while ":" in rest and rest.split(":", 1)[0] in _PATH_PREFIXES:
        rest = rest.split(":", 1)[1]
    return rest


def remus_hostport_span(uname):
    """:returns: ``(start, end)`` of ``HOST:PORT`` inside ``uname``, or None."""
    prefix = remus_prefix(uname)
    if prefix is None:
        return None
    start = len(prefix)
    bar = uname.find("|", start)
    return start, (bar if bar >= 0 else len(uname))


def parse_disk_spec(text, line=None, path=None):
    """Parse one xm disk string into a :class:`model.DiskSpec`.

    Fields are kept exactly as xm's list holds them (not stripped);
    a mode of ``None`` never happens (3 fields are mandatory).

    :raises ConfigError: not a string, or not 3 to 5 fields (xm's "Invalid
        disk specifier")
    """
    if not isinstance(text, string_types):
        raise ConfigError(path, line, "disk: expected a string 'UNAME,VDEV,MODE', got %s" % (q(text),))
    fields = text.split(",")
    if not 3 <= len(fields) <= 5:
        raise ConfigError(path, line, "disk %s: expected UNAME,VDEV,MODE[,BACKEND[,PROTOCOL]] "
                          "(3 to 5 fields), got %d field(s)" % (q(text), len(fields)))
    fields += [None] * (5 - len(fields))
    uname, vdev, mode, backend, protocol = fields
    vdev, devtype = split_devtype(vdev)
    return model.DiskSpec(uname, vdev, mode, backend, protocol,
                          remus=parse_remus_uname(uname), line=line, devtype=devtype)


def split_devtype(vdev):
    """``hdc:cdrom`` -> ``("hdc", "cdrom")``; ``hda:disk`` and ``hda`` ->
    ``("hda", "disk")`` (xm and xend write the device type after a ``:``)."""
    if vdev is None:
        return None, "disk"
    for devtype in model.DEVTYPES:
        if vdev.endswith(u":" + devtype):
            return vdev[:-len(devtype) - 1], devtype
    return vdev, "disk"


def _looks_like_vdev(text):
    return bool(_VDEV_RE.match(text.strip()))


def parse_xl_disk_spec(text, line=None, path=None):
    """Parse one xl diskspec (positional, ``key=value`` or xm's old form).

    The model gets ``uname`` = the target as written (a legacy prefix such
    as ``tap:remus:`` kept, so Remus unames are found), ``vdev`` the device
    name alone and ``devtype`` ``cdrom`` for ``devtype=cdrom``, the
    ``cdrom`` flag or the old form's ``hdc:cdrom`` (libxlutil's
    ``is_cdrom``), ``mode`` ``r`` or ``w``.

    :raises ConfigError: a parameter given twice, too many positionals,
        an unknown key, a bad access value
    """
    if not isinstance(text, string_types):
        raise ConfigError(path, line, "disk: expected a string, got %s" % (q(text),))
    named = {}
    positional = []
    rest = text
    while True:
        if rest.lstrip().startswith("target="):
            named_target = rest.lstrip()[len("target="):]
            if "target" in named:
                raise ConfigError(path, line, "disk %s: target given twice" % (q(text),))
            named["target"] = named_target
            break
        if "," in rest:
            tok, rest = rest.split(",", 1)
            more = True
        else:
            tok, more = rest, False
        tok = tok.lstrip()
        if "=" in tok:
            key, val = tok.split("=", 1)
            if key not in XL_KEYS:
                raise ConfigError(path, line, "disk %s: unknown key %s (expected one of %s)"
                                  % (q(text), q(key), ", ".join(XL_KEYS)))
            if key in named:
                raise ConfigError(path, line, "disk %s: %s given twice" % (q(text), key))
            named[key] = val
        elif tok in XL_FLAGS:
            if tok == "cdrom":
                named["devtype"] = "cdrom"
        else:
            positional.append(tok)
        if not more:
            break
    # xm's (deprecated) form: [prefix:]target,vdev[:devtype],access
    if (len(positional) == 3 and positional[1] not in XL_FORMATS and positional[1] != ""
            and _looks_like_vdev(positional[1])):
        legacy = True
        values = {"target": positional[0], "vdev": positional[1], "access": positional[2]}
    else:
        legacy = False
        if len(positional) > 4:
            raise ConfigError(path, line, "disk %s: expected at most 4 positional parameters "
                              "(target, format, vdev, access), got %d" % (q(text), len(positional)))
        values = dict(zip(_XL_POSITIONAL, positional))
    for key, val in named.items():
        if key in values and values[key] != "" and key != "target":
            raise ConfigError(path, line, "disk %s: %s given both by position and by name" % (q(text), key))
        values[key] = val
    target = values.get("target", "")
    vdev = values.get("vdev") or None
    access = values.get("access", "")
    if legacy:
        mode = access
    else:
        if access not in _XL_ACCESS:
            raise ConfigError(path, line, "disk %s: access: expected ro, r, rw or w, got %s" % (q(text), q(access)))
        mode = "r" if values.get("devtype") == "cdrom" and access == "" else _XL_ACCESS[access]
    vdev, devtype = split_devtype(vdev)
    if values.get("devtype") is not None:
        if values["devtype"] not in model.DEVTYPES:
            raise ConfigError(path, line, "disk %s: devtype: expected cdrom or disk, got %s"
                              % (q(text), q(values["devtype"])))
        devtype = values["devtype"]
    return model.DiskSpec(target, vdev, mode, values.get("backend") or None, None,
                          remus=parse_remus_uname(target), line=line, devtype=devtype)
