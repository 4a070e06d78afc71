"""``config check``: what xm does not validate and tapdisk fails on later.

Each finding is a :class:`Diagnostic`, printed ``FILE:LINE: error|warning:
text``.  Nothing here changes a file (``check_*`` never applies).

Errors (Remus cannot work): a remus disk with no port or a bad one (the
port is mandatory, block-remus has no default); an IPv6 literal (tapdisk
takes the first IPv4 address getaddrinfo gives); remus disks of one domain
naming different backups; a remus disk that is not writable; an inner
driver tapdisk does not know; a ``,`` in a path (xm splits disk specs on
every ``,``); plus anything that stops the file from being read at all
(typographic quotes, syntax, a bad disk spec).

An empty config (nothing set: an empty file, comments only) is an error
too: it is no domain.

Which controller a remus disk reaches depends on its prefix and the Xen
release (:data:`disk.XEN_ROUTES`): ``tap2:remus:`` reaches blktap2 on Xen
4.0 and later; ``tap:remus:`` reaches blktap2 on 4.0 only, and blktap1
(no remus driver) from 4.1 on.  For an xm cfg or SXP, ``tap:remus:`` is an
error for a named release of 4.1 or later, one warning naming every such
disk when no release is named, nothing for 4.0; any remus disk is an error before 4.0.  Xen-API
XML is exempt: xend gives every ``tap`` VBD of it to Blktap2Controller.

Warnings: a host name instead of an IP address (the remus-fu post found IPs
more reliable than lookups: docs/xen-facts.md section 8), a vdev used twice, one backup port used by
two disks, no remus disk at all (Remus would replicate memory only), an xl
config without a name (xl create refuses it; xm names the domain after
the file).
"""
from __future__ import absolute_import, division, print_function

import collections
import re

from xen_remus_ext import config as config_pkg
from xen_remus_ext import model
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config import settings as settings_mod
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError

ERROR = "error"
WARNING = "warning"

_IPV4 = re.compile(r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                   r"(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$")


class Diagnostic(collections.namedtuple("Diagnostic", "path line severity message")):
    """One finding of ``check``; ``severity`` is ``error`` or ``warning``."""

    __slots__ = ()


def format_diagnostic(d):
    """:returns: ``FILE:LINE: error|warning: text``."""
    return u"%s:%s: %s: %s" % (d.path or "<input>", d.line if d.line else 0, d.severity, d.message)


def _from_error(exc, path):
    reason = exc.reason
    if exc.column and u"column" not in reason:
        reason = u"%s (column %d)" % (reason, exc.column)
    return Diagnostic(exc.path or path, exc.line, exc.severity or ERROR, reason)


def is_ipv4(host):
    return bool(_IPV4.match(host))


def is_ipv6_literal(host):
    return ":" in host or host.startswith("[")


def _vdev_key(vdev):
    v = (vdev or "").strip()
    if v.startswith("ioemu:"):
        v = v[len("ioemu:"):]
    return v.split(":", 1)[0]


def check_xm_disk_text(text, line, path):
    """Problems of one xm disk string that stop it from being parsed.

    :returns: list of Diagnostic
    """
    fields = text.split(",")
    modes = ("r", "w", "w!")
    if disk_mod.remus_prefix(fields[0]) is not None or fields[0].startswith(("tap:", "tap2:", "file:", "phy:")):
        if len(fields) > 3 and fields[2] not in modes and any(f in modes for f in fields[3:]):
            return [Diagnostic(path, line, ERROR, u"disk %s: a ',' in the path: xm splits disk specs on every "
                               u"',' (UNAME,VDEV,MODE), so the image path cannot contain one; rename the image"
                               % q(text))]
    if not 3 <= len(fields) <= 5:
        return [Diagnostic(path, line, ERROR, u"disk %s: expected UNAME,VDEV,MODE[,BACKEND[,PROTOCOL]] "
                           u"(3 to 5 fields), got %d" % (q(text), len(fields)))]
    return []


def check_disk(d, path):
    """Checks of one disk on its own.  :returns: list of Diagnostic"""
    out = []
    line = d.line

    def err(msg):
        out.append(Diagnostic(path, line, ERROR, msg))

    def warn(msg):
        out.append(Diagnostic(path, line, WARNING, msg))

    if d.mode is not None and d.mode not in model.DISK_MODES:
        err(u"disk %s: mode: expected r, w or w!, got %s" % (q(d.vdev), q(d.mode)))
    if "," in d.uname:
        err(u"disk %s: a ',' in the path %s: xm splits disk specs on ',', so it cannot be written in an "
            u"xm cfg" % (q(d.vdev), q(d.uname)))
    r = d.remus
    if r is None:
        return out
    who = u"remus disk %s" % q(d.vdev)
    if r.port is None or r.port == "":
        err(u"%s: expected HOST:PORT after 'remus:', got no port in %s (the port is mandatory: "
            u"block-remus has no default)" % (who, q(d.uname)))
    elif not isinstance(r.port, int):
        err(u"%s: port: expected a number 1-65535, got %s" % (who, q(r.port)))
    if not r.host:
        err(u"%s: expected the backup's address after 'remus:', got none" % who)
    elif is_ipv6_literal(r.host):
        err(u"%s: host %s is an IPv6 literal: tapdisk only uses the first IPv4 address getaddrinfo "
            u"gives, so this can never connect; use the backup's IPv4 address" % (who, q(r.host)))
    elif not is_ipv4(r.host):
        warn(u"%s: host %s is a name, not an IP address: tapdisk resolves it with getaddrinfo at "
             u"open time; an IP address is more reliable" % (who, q(r.host)))
    if d.mode is not None and d.mode.strip() not in ("w", "w!"):
        err(u"%s: mode %s: expected w (a remus disk must be writable)" % (who, q(d.mode)))
    if not r.driver:
        err(u"%s: expected an inner driver after '|' (e.g. aio:/path), got none in %s" % (who, q(d.uname)))
    elif r.driver == "remus":
        err(u"%s: inner driver 'remus' stacked twice in %s" % (who, q(d.uname)))
    elif r.driver not in disk_mod.TAPDISK_DRIVERS:
        err(u"%s: inner driver %s: expected one tapdisk knows (%s)"
            % (who, q(r.driver), ", ".join(d_ for d_ in disk_mod.TAPDISK_DRIVERS if d_ != "remus")))
    elif not r.path:
        err(u"%s: expected a path after %s:, got none" % (who, r.driver))
    return out


def check_routes(cfg, path=None, xen_version=None, classes=None):
    """Does each remus disk reach xend's blktap2?  ``xen_version``: a tuple
    (None: say what each release does); ``classes``: uname -> the SXP
    device class when the file names it (``tap``, ``tap2``).

    :returns: list of Diagnostic"""
    path = path or cfg.source
    out = []
    unrouted = []
    for d in cfg.remus_disks:
        who = u"remus disk %s" % q(d.vdev)
        uname = d.uname
        cls = (classes or {}).get(uname)
        if cls in ("tap", "tap2"):
            uname = cls + u":" + uname.split(u":", 1)[1]   # the class decides, not the prefix
        if xen_version is not None:
            route = disk_mod.xen_route(uname, xen_version)
            where = u"Xen %s" % u".".join(str(p) for p in xen_version)
            if route is None:
                continue
            controller, ok = route
            if controller is None:
                out.append(Diagnostic(path, d.line, ERROR, u"%s: %s has no blktap2, so no remus disk "
                                      u"(blktap2 and its remus driver came with Xen 4.0)" % (who, where)))
            elif not ok:
                out.append(Diagnostic(path, d.line, ERROR, u"%s: on %s, xm sends a 'tap:' disk to xend's %s: "
                                      u"Remus cannot start; write 'tap2:%s'"
                                      % (who, where, controller, d.uname.split(u":", 1)[1])))
        elif uname.startswith(u"tap:"):
            unrouted.append(d)
    if unrouted:
        out.append(Diagnostic(path, unrouted[0].line, WARNING, u"remus disk%s %s: 'tap:' reaches xend's blktap2 "
                              u"(and its remus driver) only on Xen 4.0; from 4.1 on xm sends it to "
                              u"BlktapController (blktap1, no remus driver); write 'tap2:remus:...', which "
                              u"reaches blktap2 on 4.0 and later (--xen-version names the release to check for)"
                              % (u"s" if len(unrouted) > 1 else u"", u", ".join(q(d.vdev) for d in unrouted))))
    return out


def _sxp_classes(text, path):
    """uname -> device class of each ``(device (CLASS (uname U) ...))``."""
    from xen_remus_ext.config import sxp
    try:
        tree = sxp.parse(text, path)
    except ConfigError:
        return {}
    out = {}
    for form in tree if isinstance(tree, list) else ():
        for kid in sxp.children(form, "device") if isinstance(form, list) else ():
            dev = kid[1] if len(kid) > 1 and isinstance(kid[1], list) and kid[1] else None
            if dev is not None:
                uname = sxp.child_value(dev, "uname")
                if uname is not None:
                    out[uname] = dev[0]
    return out


def check_config(cfg, path=None):
    """Checks across the disks of one domain.  :returns: list of Diagnostic"""
    path = path or cfg.source
    out = []
    for d in cfg.disks:
        out.extend(check_disk(d, path))
    remus = [d for d in cfg.disks if d.remus is not None and d.remus.host]
    if remus:
        first = remus[0]
        for d in remus[1:]:
            if d.remus.host != first.remus.host:
                out.append(Diagnostic(path, d.line, ERROR, u"remus disk %s names backup %s but remus disk %s "
                                      u"names %s: all remus disks of a domain go to one backup"
                                      % (q(d.vdev), q(d.remus.host), q(first.vdev), q(first.remus.host))))
    seen_vdev = {}
    for d in cfg.disks:
        key = _vdev_key(d.vdev)
        if not key:
            continue
        if key in seen_vdev:
            out.append(Diagnostic(path, d.line, WARNING, u"vdev %s is used twice (first at line %s)"
                                  % (q(key), seen_vdev[key].line or "?")))
        else:
            seen_vdev[key] = d
    seen_port = {}
    for d in remus:
        if not isinstance(d.remus.port, int):
            continue
        key = (d.remus.host, d.remus.port)
        if key in seen_port:
            out.append(Diagnostic(path, d.line, WARNING, u"backup port %s:%d is used by remus disks %s and %s: "
                                  u"each disk needs its own port" % (d.remus.host, d.remus.port,
                                                                      q(seen_port[key].vdev), q(d.vdev))))
        else:
            seen_port[key] = d
    return out


def _check_settings(st, path):
    """xm/xl: check each disk entry on its own so one bad entry does not
    hide the others.  :returns: (diagnostics, DomainConfig or None)"""
    out = []
    try:
        entries = settings_mod.disk_entries(st, path)
    except ConfigError as exc:
        return [_from_error(exc, path)], None
    disks = []
    for text, line in entries:
        if st.fmt == "xm":
            found = check_xm_disk_text(text, line, path)
            if found:
                out.extend(found)
                continue
        try:
            disks.append(settings_mod.parse_disk_entry(st, text, line, path))
        except ConfigError as exc:
            out.append(_from_error(exc, path))
    opts = dict(st.options)
    opts.pop("disk", None)
    try:
        cfg = settings_mod.domain_config(settings_mod.Settings(opts, st.lines, st.item_lines, st.fmt), path)
    except ConfigError as exc:
        return out + [_from_error(exc, path)], None
    return out, cfg._replace(disks=tuple(disks))


def check_text(text, path="<input>", fmt=None, uname=None, xen_version=None):
    """:returns: sorted list of :class:`Diagnostic` for a config's text.

    :param xen_version: the Xen release the config is for, a tuple such as
        ``(4, 1)``; None checks for every release (see :func:`check_routes`)
    """
    from xen_remus_ext.config import xl_cfg, xm_cfg
    try:
        if fmt is None:
            fmt = config_pkg.detect_format(text, path)
        if fmt in ("xm", "xl"):
            text = config_pkg.decode(text, path)
            if text.startswith(u"\ufeff"):
                text = text[1:]
    except ConfigError as exc:
        return [_from_error(exc, path)]
    if fmt == "xm":
        source_errors = xm_cfg.check_source(text, path)
        if source_errors:
            return [_from_error(e, path) for e in source_errors]
        try:
            st = xm_cfg.evaluate(text, path, uname=uname)
        except ConfigError as exc:
            return [_from_error(exc, path)]
        out, cfg = _check_settings(st, path)
    elif fmt == "xl":
        try:
            st = xl_cfg.parse_settings(text, path)
        except ConfigError as exc:
            return [_from_error(exc, path)]
        out, cfg = _check_settings(st, path)
    else:
        out = []
        try:
            cfg = config_pkg.parse_text(text, path=path, fmt=fmt)
        except ConfigError as exc:
            return [_from_error(exc, path)]
    if cfg is not None and config_pkg.is_empty(cfg):
        return [Diagnostic(path, None, ERROR, u"the config sets nothing (an empty file or comments only): "
                           u"not a domain config")] + out
    if cfg is not None:
        out.extend(check_config(cfg, path))
        if fmt in ("xm", "sxp"):
            classes = _sxp_classes(config_pkg.decode(text, path), path) if fmt == "sxp" else None
            out.extend(check_routes(cfg, path, xen_version, classes))
        if cfg.name is None and fmt == "xl":
            out.append(Diagnostic(path, None, WARNING, u"no name: xl create refuses a domain without one"))
        if not cfg.remus_disks and not has_errors(out):
            out.append(Diagnostic(path, None, WARNING, u"no remus disk (tap2:remus:HOST:PORT|aio:PATH): Remus "
                                  u"would replicate memory only, and the backup's disks would not follow"))
        if fmt == "xl":
            for d in cfg.remus_disks:
                out.append(Diagnostic(path, d.line, WARNING, u"remus disk %s: xl has no remus: disks (xl remus "
                                      u"replicates disks only through DRBD); this uname works under xend/xm "
                                      u"only" % q(d.vdev)))
    return sorted(out, key=lambda d: (d.line or 0, d.severity != ERROR))


def check_file(path, fmt=None, uname=None, xen_version=None):
    """:returns: list of :class:`Diagnostic` for the config file at ``path``
    (an unreadable file is one error)."""
    try:
        data = config_pkg.read_file(path)
    except ConfigError as exc:
        return [_from_error(exc, path)]
    return check_text(data, path=path, fmt=fmt, uname=uname, xen_version=xen_version)


def has_errors(diagnostics):
    return any(d.severity == ERROR for d in diagnostics)
