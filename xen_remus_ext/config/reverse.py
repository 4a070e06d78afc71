"""``config reverse``: point a config's Remus disks at the other host.

After a failover the domain runs on the backup, whose disks still say
``tap:remus:<backup>:PORT|...``; to run Remus back toward the original
primary the unames must name that host instead (the remus-fu post: Remus
cannot be started on the backup pointing back; docs/xen-facts.md section 8).  This module
rewrites only ``HOST:PORT`` inside each remus uname (the port only when
asked), and leaves every other byte alone: comments, spacing, quoting,
line endings, the byte order mark.

Only real values are touched: string literals of an xm cfg (found with
Python's tokenizer), strings of an xl cfg, atoms and strings of SXP, and
XML outside comments.  The result is parsed again and must describe the
same domain with only the remus hosts and mapped ports changed; a uname
the cfg computes (so that it is not written out literally) is refused.
"""
from __future__ import absolute_import, division, print_function

import io
import os
import re
import shutil
import tokenize

from xen_remus_ext import config as config_pkg
from xen_remus_ext.compat import atomic_write, binary_type, integer_types, text_type
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError, ValidationError

_REMUS_RE = re.compile(u"(tap2?:(?:tapdisk:)?remus:)([^|'\"\\s,()<>\\[\\];#\\\\%{}]*)")
_SXP_SEP = u"{}()<>[]!;"
#: what may follow HOST:PORT in a literal uname
_HP_END = (u"|", u"'", u'"', u"", u" ", u"\t", u"\n", u")", u",")
_FIXED_UNAME = (u"Linux", u"host", u"", u"", u"x86_64")  # what os.uname() says to both evaluations


def _check_host(host):
    if host and host.count(u":") == 1 and not host.startswith(u"["):
        name, port = host.split(u":")
        raise ValidationError("backup host: expected a host without a port, got %s; the ports stay as they are "
                              "(change one with --port OLD=NEW%s)"
                              % (q(host), ", e.g. --port 9000=%s" % port if port.isdigit() else ""))
    if not host or any(c in host for c in u" \t\n|,:'\"()[]<>#;\\"):
        raise ValidationError("backup host: expected an IPv4 address or a host name, got %s%s"
                              % (q(host), " (an IPv6 address: tapdisk only connects to IPv4)"
                                 if u":" in (host or u"") else ""))


def _line_starts(text):
    starts = [0]
    for i, c in enumerate(text):
        if c == u"\n":
            starts.append(i + 1)
    return starts


def _xm_spans(text):
    """Offsets ``(start, end)`` of every Python string literal."""
    starts = _line_starts(text)
    spans = []
    readline = io.StringIO(text).readline
    try:
        for tok in tokenize.generate_tokens(readline):
            if tok[0] == tokenize.STRING:
                (r1, c1), (r2, c2) = tok[2], tok[3]
                spans.append((starts[r1 - 1] + c1, starts[r2 - 1] + c2))
    except (tokenize.TokenError, SyntaxError) as exc:
        raise ConfigError(None, None, "cannot tokenize the cfg: %s" % (exc,))
    return spans


def _xl_spans(text):
    from xen_remus_ext.config import xl_cfg
    starts = _line_starts(text)
    spans = []
    for tok in xl_cfg.tokenize(text):
        if tok.kind == "STRING":
            start = starts[tok.line - 1] + tok.col - 1
            spans.append((start, start + len(tok.raw)))
    return spans


def _sxp_spans(text):
    """Everything but comments, following the reader's rules."""
    spans = []
    i, n = 0, len(text)
    seg = 0
    while i < n:
        c = text[i]
        if c == u"#":
            spans.append((seg, i))
            while i < n and text[i] != u"\n":
                i += 1
            seg = i
        elif c in u"'\"":
            i += 1
            while i < n and text[i] != c:
                i += 2 if text[i] == u"\\" else 1
            i += 1
        elif c in u" \t\n\r\x0b\x0c()":
            i += 1
        else:  # an atom: runs to a separator, space or '#'
            i += 1
            while i < n and text[i] not in _SXP_SEP and text[i] not in u" \t\n\r\x0b\x0c#":
                i += 1
    spans.append((seg, n))
    return spans


def _xml_spans(text):
    spans = []
    pos = 0
    for m in re.finditer(u"<!--.*?-->", text, re.S):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return spans


_SPANS = {"xm": _xm_spans, "xl": _xl_spans, "sxp": _sxp_spans, "xml": _xml_spans}


def _new_hostport(old, backup, ports):
    host, port = disk_mod.split_host_port(old)
    if port is None:
        return backup
    if ports and port.isdigit() and int(port) in ports:
        port = text_type(ports[int(port)])
    return u"%s:%s" % (backup, port)


def _substitute(text, spans, backup, ports):
    out = []
    last = 0
    count = 0
    for start, end in spans:
        for m in _REMUS_RE.finditer(text, start, end):
            hp_start, hp_end = m.span(2)
            if hp_start == hp_end or text[hp_end:hp_end + 1] not in _HP_END:
                continue  # built by the file ('%s', '+'): left for _verify to refuse
            out.append(text[last:hp_start])
            out.append(_new_hostport(m.group(2), backup, ports))
            last = hp_end
            count += 1
    out.append(text[last:])
    return u"".join(out), count


def _normalize(value):
    if isinstance(value, dict):
        return dict((k, _normalize(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if isinstance(value, text_type) or isinstance(value, str):
        return _REMUS_RE.sub(u"\\1*", value)
    return value


def _parse(text, fmt, path):
    return config_pkg.parse_text(text, path=path, fmt=fmt, uname=_FIXED_UNAME)


def _refuse_what_check_rejects(body, fmt, path):
    """A config ``config check`` rejects is not rewritten: the result
    would be as broken (an IPv6 backup, disks naming different backups)."""
    from xen_remus_ext.config import check as check_mod
    errors = [d for d in check_mod.check_text(body, path=path, fmt=fmt, uname=_FIXED_UNAME)
              if d.severity == check_mod.ERROR]
    if errors:
        first = errors[0]
        raise ConfigError(path, first.line, "reverse: refused, `config check` finds %d error%s in this config, "
                          "the first: %s" % (len(errors), "" if len(errors) == 1 else "s", first.message))


def _verify(before, after, backup, ports, path):
    if len(before.disks) != len(after.disks):
        raise ConfigError(path, None, "reverse: expected %d disks after rewriting, got %d"
                          % (len(before.disks), len(after.disks)))
    for old, new in zip(before.disks, after.disks):
        if (old.vdev, old.devtype, old.mode, old.backend, old.protocol) != \
                (new.vdev, new.devtype, new.mode, new.backend, new.protocol):
            raise ConfigError(path, old.line, "reverse: disk %s changed beyond its remus host" % q(old.vdev))
        if old.remus is None:
            if old.uname != new.uname:
                raise ConfigError(path, old.line, "reverse: non-remus disk %s changed" % q(old.vdev))
            continue
        want_port = old.remus.port
        if ports and isinstance(want_port, integer_types) and want_port in ports:
            want_port = ports[want_port]
        if new.remus is None or new.remus.host != backup or new.remus.port != want_port \
                or (new.remus.driver, new.remus.path) != (old.remus.driver, old.remus.path):
            raise ConfigError(path, old.line, "reverse: could not rewrite remus disk %s: its uname %s is "
                              "computed by the file, not written out literally; edit it by hand"
                              % (q(old.vdev), q(old.uname)))
    for field in ("name", "memory", "builder", "kernel", "vcpus", "vifs"):
        if getattr(before, field) != getattr(after, field):
            raise ConfigError(path, None, "reverse: %s changed while rewriting remus hosts" % field)
    if _normalize(dict(before.options)) != _normalize(dict(after.options)):
        raise ConfigError(path, None, "reverse: a setting other than the remus unames changed")


def reverse_text(text, fmt, backup_host, ports=None, path="<input>"):
    """Rewrite every remus uname of ``text`` to name ``backup_host``.

    :param fmt: ``xm``, ``xl``, ``sxp``, ``xml`` or None (detect)
    :param backup_host: the new backup (the host Remus will replicate to)
    :param ports: optional dict old port (int) -> new port (int)
    :returns: the new text (bytes when ``text`` was bytes)
    :raises ConfigError: the text does not parse, has no remus disk, or a
        uname cannot be rewritten in place
    :raises ValidationError: a backup host tapdisk could not use
    """
    _check_host(backup_host)
    for old, new in (ports or {}).items():
        for p in (old, new):
            if not isinstance(p, integer_types) or not 0 < p < 65536:
                raise ValidationError("port map: expected ports 1-65535, got %s" % q(p))
    was_bytes = isinstance(text, binary_type)
    if fmt is None:
        fmt = config_pkg.detect_format(text, path)
    if was_bytes:
        data = text
        bom = data.startswith(b"\xef\xbb\xbf")
        text = config_pkg.decode(data, path)
        text = (u"\ufeff" + text) if bom else text
    body = text[1:] if text.startswith(u"\ufeff") else text
    before = _parse(body, fmt, path)
    if not before.remus_disks:
        raise ConfigError(path, None, "reverse: no remus disk (tap:remus:, tap2:remus:, tap2:tapdisk:remus:) "
                          "in this config")
    _refuse_what_check_rejects(body, fmt, path)
    used = set(d.remus.port for d in before.remus_disks)
    for old in sorted(ports or ()):
        if old not in used:
            raise ConfigError(path, None, "reverse: --port %d=%d: no remus disk uses port %d (ports in use: %s)"
                              % (old, ports[old], old, ", ".join(text_type(p) for p in sorted(used, key=text_type))))
    try:
        spans = _SPANS[fmt](body)
    except ConfigError as exc:
        raise ConfigError(path, exc.line, exc.reason)
    new_body, count = _substitute(body, spans, backup_host, ports)
    try:
        after = _parse(new_body, fmt, path)
    except ConfigError as exc:
        raise ConfigError(path, exc.line, "reverse: the rewritten file no longer reads (%s); a remus uname "
                          "is probably built by the file; edit it by hand" % exc.reason)
    _verify(before, after, backup_host, ports, path)
    result = (u"\ufeff" + new_body) if text.startswith(u"\ufeff") else new_body
    return result.encode("utf-8") if was_bytes else result


def reverse_file(path, backup, ports=None, out=None, in_place=False, fmt=None):
    """Reverse the config file at ``path``.

    :param out: write the result there (atomically)
    :param in_place: replace ``path``, keeping the original as ``path.orig``
    :returns: the new content as bytes
    :raises ConfigError: see :func:`reverse_text`; also when both ``out``
        and ``in_place`` are given or ``path.orig`` already exists
    """
    if out and in_place:
        raise ConfigError(path, None, "reverse: expected -o OUT or --in-place, got both")
    data = config_pkg.read_file(path)
    new = reverse_text(data, fmt, backup, ports, path=path)
    if in_place:
        orig = path + ".orig"
        if os.path.exists(orig):
            raise ConfigError(orig, None, "reverse --in-place: %s already exists; move it away first "
                              "(it may hold the only copy of an earlier original)" % orig)
        _write(orig, lambda: shutil.copy2(path, orig))
        mode = os.stat(path).st_mode & 0o7777
        _write(path, lambda: atomic_write(path, new, mode))
    elif out:
        mode = os.stat(path).st_mode & 0o7777
        _write(out, lambda: atomic_write(out, new, mode))
    return new


def _write(target, do):
    """Run ``do()``; an OS error is a ConfigError naming ``target`` (not a temporary file)."""
    try:
        do()
    except (IOError, OSError) as exc:
        raise ConfigError(target, None, "reverse: cannot write the file: %s"
                          % (getattr(exc, "strerror", None) or exc,))


def parse_port_map(items):
    """``["9000=9001", ...]`` -> ``{9000: 9001}``.

    :raises ValidationError: an item that is not ``OLD=NEW`` with ports 1-65535
    """
    ports = {}
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old.isdigit() or not new.isdigit() or not (0 < int(old) < 65536) \
                or not (0 < int(new) < 65536):
            raise ValidationError("--port: expected OLD=NEW with ports 1-65535, got %s" % q(item))
        ports[int(old)] = int(new)
    return ports
