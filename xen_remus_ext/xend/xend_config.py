"""Read and edit xend-config.sxp: the migration hook and the relocation settings.

xend reads ``/etc/xen/xend-config.sxp`` (env ``XEND_CONFIG``) as a sequence of
SXP forms and takes the FIRST top-level form of a name
(``sxp.child_value``); docs/xen-facts.md sections 3 and 4.  The forms this module
knows:

- ``(external-migration-tool TOOL)``: a shell command xend's
  ``DevController.migrate`` runs per device and step as
  ``TOOL -type CLASS -step N -host DST -domname NAME [-recover]``;
- ``(xend-relocation-port 8002)``, ``(xend-relocation-ssl-port 8003)``,
  ``(xend-relocation-address '')``, ``(xend-relocation-server no)``,
  ``(xend-relocation-hosts-allow 'RE RE ...')`` (empty: anyone; else a peer
  is let in when one pattern ``re.match``-es its FQDN or its address).

Installing the hook edits the text in place so that the admin's comments and
layout stay as they were: the first active ``external-migration-tool`` form is
replaced, or one is appended.  Values are read with :mod:`config.sxp` (xend's
reading rules); :func:`scan_forms` finds where each form sits in the text
for the edits, and every edit is checked by reading the result back.
``plan_*`` functions are pure (text in, text out); ``apply_*`` write the file.
"""
from __future__ import absolute_import, division, print_function

import collections
import json
import os
import re
import stat

from xen_remus_ext.compat import atomic_write, string_types, to_bytes, to_text
from xen_remus_ext.config import sxp as config_sxp
from xen_remus_ext.errors import ConfigError, ToolstackError

DEFAULT_PATH = "/etc/xen/xend-config.sxp"
ENV_PATH = "XEND_CONFIG"

TOOL_KEY = "external-migration-tool"
#: the comment line put above a form we add, so uninstall finds it again
OUR_COMMENT = "# device-migrate hook of xen-remus-ext (xen-remus hook-config install)"
#: the comment line ``install --force`` puts above our form when it replaces
#: the site's own tool: the replaced form's text as a JSON string, which
#: ``uninstall`` puts back
SAVED_PREFIX = "# xen-remus-ext replaced, restored by hook-config uninstall: "
#: how we recognise our tool in a config, whatever its path
OUR_TOOL_RE = re.compile(r"(^|[\s/])(xen-remus\s+hook|xen-remus-migrate-hook"
                         r"|-m\s+xen_remus_ext\.(?:hooks|xend\.hook_tool))(\s|$)")

DEFAULTS = {
    "xend-relocation-port": 8002,
    "xend-relocation-ssl-port": 8003,
    "xend-relocation-address": "",
    "xend-relocation-server": "no",
    "xend-relocation-hosts-allow": "",
    TOOL_KEY: "",
}

BOOL_TRUE = ("yes", "y", "1", "on", "true", "t")
BOOL_FALSE = ("no", "n", "0", "off", "false", "f")


class XendSettings(collections.namedtuple("XendSettings", (
        "path relocation_port relocation_ssl_port relocation_address relocation_server "
        "hosts_allow migration_tool"))):
    """What this package needs from xend-config.sxp.

    ``hosts_allow`` is a tuple of regular-expression texts (empty: every
    peer allowed); ``migration_tool`` is ``""`` when none is set.
    """

    __slots__ = ()

    @property
    def hook_installed(self):
        return is_our_tool(self.migration_tool)

    def to_dict(self):
        return dict(self._asdict(), hosts_allow=list(self.hosts_allow),
                    hook_installed=self.hook_installed)


def config_path(path=None):
    """:returns: ``path``, else ``$XEND_CONFIG``, else /etc/xen/xend-config.sxp."""
    return path or os.environ.get(ENV_PATH) or DEFAULT_PATH


def is_our_tool(tool):
    return bool(tool) and OUR_TOOL_RE.search(tool) is not None


def _first_value(forms, name):
    for form in forms:
        if form.name == name:
            return form.values[0] if form.values else ""
    return None


def _int(path, forms, name):
    form = [f for f in forms if f.name == name][:1]
    val = _first_value(forms, name)
    if val is None:
        return DEFAULTS[name]
    try:
        return int(val)
    except (TypeError, ValueError):
        raise ConfigError(path, form[0].line, "%s: expected an int, got %r" % (name, val))


def _bool(path, forms, name):
    val = _first_value(forms, name)
    if val is None:
        val = DEFAULTS[name]
    if not isinstance(val, string_types):
        val = str(val)
    if val.lower() in BOOL_TRUE:
        return True
    if val.lower() in BOOL_FALSE:
        return False
    line = [f.line for f in forms if f.name == name][:1] or [0]
    raise ConfigError(path, line[0], "%s: expected a boolean (yes/no), got %r" % (name, val))


def _string(forms, name):
    val = _first_value(forms, name)
    if val is None:
        return DEFAULTS[name]
    return val if isinstance(val, string_types) else str(val)


class Form(collections.namedtuple("Form", "name values start end line")):
    """One top-level ``(name value ...)``: ``text[start:end]`` is the form."""

    __slots__ = ()


def scan_forms(text, path=None):
    """The top-level forms as xend reads them (config.sxp), with their lines
    and offsets; a stray top-level atom is ignored, as xend ignores it.

    :raises ConfigError: a syntax error, naming line and column
    """
    lines, spans = {}, {}
    vals = config_sxp.parse(to_text(text), path, lines, spans)
    forms = []
    for val in vals:
        if not isinstance(val, list):
            continue  # xend looks only at lists (sxp.child_value)
        name = val[0] if val and not isinstance(val[0], list) else None
        start, end = spans[id(val)]
        forms.append(Form(name, val[1:], start, end, lines.get(id(val), 0)))
    return forms


def parse_xend_config(text, path=None):
    """Parse xend-config.sxp text.

    :returns: :class:`XendSettings`
    :raises ConfigError: malformed SXP, or a value of the wrong type
    """
    path = path or DEFAULT_PATH
    forms = scan_forms(text, path)
    hosts = _string(forms, "xend-relocation-hosts-allow")
    for pattern in hosts.split():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(path, _line_of(forms, "xend-relocation-hosts-allow"),
                              "xend-relocation-hosts-allow: expected regular expressions, "
                              "got %r (%s)" % (pattern, exc))
    return XendSettings(
        path=path,
        relocation_port=_int(path, forms, "xend-relocation-port"),
        relocation_ssl_port=_int(path, forms, "xend-relocation-ssl-port"),
        relocation_address=_string(forms, "xend-relocation-address"),
        relocation_server=_bool(path, forms, "xend-relocation-server"),
        hosts_allow=tuple(hosts.split()),
        migration_tool=_string(forms, TOOL_KEY),
    )


def _line_of(forms, name):
    for form in forms:
        if form.name == name:
            return form.line
    return 0


def read_existing_config(path=None):
    """Read xend-config.sxp, which must exist and be text.

    :returns: :class:`XendSettings`
    :raises ToolstackError: missing, unreadable or not text
    :raises ConfigError: not valid SXP
    """
    path = config_path(path)
    return parse_xend_config(_read_text(path), path)


def read_xend_config(path=None):
    """Read xend-config.sxp; a missing file gives xend's defaults (as xend does).

    :returns: :class:`XendSettings`
    """
    path = config_path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError) as exc:
        if not os.path.exists(path):
            return parse_xend_config(u"", path)
        raise ToolstackError("%s: expected a readable xend config, got %s" % (path, exc))
    return parse_xend_config(to_text(data, errors="replace"), path)


def host_allowed(settings, addr, fqdn=None):
    """Would this xend's relocation server accept a connection from ``addr``?

    xend's rule: no patterns -> yes; else yes when one pattern matches (from
    the start, ``re.match``) the peer's FQDN or its address.  ``fqdn`` is
    resolved by the caller (``socket.getfqdn(addr)``), keeping this pure.
    """
    if not settings.hosts_allow:
        return True
    for pattern in settings.hosts_allow:
        rx = re.compile(pattern)
        if rx.match(addr) or (fqdn and rx.match(fqdn)):
            return True
    return False


def quote(value):
    """An SXP string literal for ``value`` (single quotes, C escapes)."""
    out = []
    for ch in value:
        if ch in ("\\", "'"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "'%s'" % "".join(out)


def plan_install_hook(text, tool, path=None, force=False):
    """:returns: ``text`` with ``(external-migration-tool TOOL)`` in force.

    Replaces the first active form of that name (the one xend reads), or
    appends one with a marker comment.  A tool that is not ours is replaced
    only with ``force``.

    :raises ToolstackError: another tool is configured and not ``force``
    """
    path = path or DEFAULT_PATH
    text = to_text(text)
    forms = scan_forms(text, path)
    new_form = "(%s %s)" % (TOOL_KEY, quote(tool))
    existing = [f for f in forms if f.name == TOOL_KEY]
    if existing:
        first = existing[0]
        current = _first_value(forms, TOOL_KEY) or ""
        if current and not is_our_tool(current) and not force:
            raise ToolstackError(
                "%s:%d: %s: expected none or ours, got %r; pass --force to replace it"
                % (path, first.line, TOOL_KEY, current))
        if current and not is_our_tool(current):
            # keep the site's form, to give it back at uninstall
            line_start = text.rfind("\n", 0, first.start) + 1
            saved = SAVED_PREFIX + json.dumps(text[first.start:first.end]) + "\n"
            result = text[:line_start] + saved + text[line_start:first.start] + new_form + text[first.end:]
        else:
            result = text[:first.start] + new_form + text[first.end:]
    else:
        sep = "" if not text or text.endswith("\n") else "\n"
        result = "%s%s\n%s\n%s\n" % (text, sep, OUR_COMMENT, new_form)
    check = parse_xend_config(result, path)
    if check.migration_tool != tool:
        raise ToolstackError("%s: after the edit xend would read %s %r, expected %r"
                             % (path, TOOL_KEY, check.migration_tool, tool))
    return result


def plan_uninstall_hook(text, path=None):
    """:returns: ``text`` without our ``external-migration-tool`` form(s).

    Forms naming another tool are left alone; our marker comment goes too.
    A form of ours that replaced the site's own (``install --force``) gives
    way to that form again, as it was.
    """
    path = path or DEFAULT_PATH
    text = to_text(text)
    forms = scan_forms(text, path)
    result = text
    for form in reversed([f for f in forms if f.name == TOOL_KEY]):
        value = form.values[0] if form.values else ""
        if not (isinstance(value, string_types) and is_our_tool(value)):
            continue
        start, end = form.start, form.end
        line_start = result.rfind("\n", 0, start) + 1
        saved = _saved_before(result, line_start)
        if saved is not None:
            comment_start, original = saved
            result = result[:comment_start] + result[line_start:start] + original + result[end:]
            continue
        line_end = result.find("\n", end)
        line_end = len(result) if line_end < 0 else line_end + 1
        if result[line_start:start].strip() == "" and result[end:line_end].strip() == "":
            start, end = line_start, line_end  # the form had the line to itself
        before = result[:start]
        if before.endswith(OUR_COMMENT + "\n"):
            before = before[:-len(OUR_COMMENT) - 1]
            if before.endswith("\n\n"):
                before = before[:-1]
        result = before + result[end:]
    return result


def _saved_before(text, line_start):
    """The site's form saved on the line before ``line_start``:
    ``(where that comment line starts, the form's text)``, or None."""
    if line_start == 0:
        return None
    prev_start = text.rfind("\n", 0, line_start - 1) + 1
    line = text[prev_start:line_start - 1]
    if not line.startswith(SAVED_PREFIX):
        return None
    try:
        original = json.loads(line[len(SAVED_PREFIX):])
    except ValueError:
        return None
    return (prev_start, original) if isinstance(original, string_types) else None


def _write(path, text):
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o644
    atomic_write(path, to_bytes(text), mode=mode)


def _read_text(path):
    """The file's text.

    :raises ToolstackError: it is missing (xend would run on its defaults;
        a mistyped ``--config`` must not create a new file), unreadable, or
        not text (undecodable as UTF-8, or holding NUL bytes)
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except (IOError, OSError) as exc:
        if not os.path.exists(path):
            raise ToolstackError("%s: expected xend's config file, got no such file (xend reads %s, "
                                 "or $%s)" % (path, DEFAULT_PATH, ENV_PATH))
        raise ToolstackError("%s: expected a readable xend config, got %s"
                             % (path, getattr(exc, "strerror", None) or exc))
    nul = data.find(b"\0")
    if nul >= 0:
        raise ToolstackError("%s: expected a text file (xend-config.sxp), got a NUL byte at offset %d"
                             % (path, nul))
    try:
        return to_text(data)
    except UnicodeDecodeError as exc:
        raise ToolstackError("%s: expected a text file (xend-config.sxp, UTF-8), got undecodable bytes "
                             "at offset %d" % (path, exc.start))


def apply_install_hook(tool, path=None, force=False):
    """Install ``tool`` as xend's external-migration-tool in the file.

    :returns: True when the file changed (False: already installed)
    :raises ToolstackError: the file is missing or not text, or holds
        another tool and not ``force``
    """
    path = config_path(path)
    old = _read_text(path)
    new = plan_install_hook(old, tool, path, force=force)
    if new == old:
        return False
    _write(path, new)
    return True


def apply_uninstall_hook(path=None):
    """:returns: True when the file changed."""
    path = config_path(path)
    old = _read_text(path)
    new = plan_uninstall_hook(old, path)
    if new == old:
        return False
    _write(path, new)
    return True


def default_tool(argv0=None, python=None):
    """The command line xend should run: ``<abs path of xen-remus> hook``.

    Falls back to ``<python> -m xen_remus_ext.xend.hook_tool`` when no ``xen-remus``
    script is on PATH (xend runs the tool through a shell, with its own PATH,
    so the path must be absolute).
    """
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "xen-remus")
        if d and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return "%s hook" % os.path.abspath(cand)
    import sys
    return "%s -m xen_remus_ext.xend.hook_tool" % (python or sys.executable)
