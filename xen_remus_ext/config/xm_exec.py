"""``--exec``: run an xm cfg as Python, the way xm itself does.

This is the explicit opt-in for cfg files beyond the AST evaluator of
:mod:`.xm_cfg`.  It follows ``Opts.load`` (xm/opts.py, Xen 4.1.0,
docs/xen-facts.md section 2): empty globals; locals seeded with the command-line
variables, ``sys``, ``os`` (and ``os.path``), ``xm_file``, ``xm_help`` and
an ``xm_vars`` object; then every local whose type is exactly str, list,
int or float becomes an option.  The file can do anything the user can.
"""
from __future__ import absolute_import, division, print_function

import ast
import os
import sys

import six

from xen_remus_ext.compat import binary_type
from xen_remus_ext.config import settings as settings_mod
from xen_remus_ext.errors import ConfigError

#: names seeded into the cfg's locals (never options)
SEEDED_NAMES = ("sys", "os", "xm_file", "xm_help", "xm_vars")


class XmVars(object):
    """What ``xen.xm.help.Vars`` offers a cfg: ``var()`` and ``check()``."""

    def __init__(self, name, help, env):
        self.name, self.help, self.env = name, help, env
        self.declared = []

    def var(self, name, use=None, check=None):
        self.declared.append(name)

    def check(self):
        return None


def _assignment_lines(tree):
    lines, item_lines = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    lines[t.id] = max(lines.get(t.id, 0), node.lineno)
                    if isinstance(node.value, ast.List):
                        item_lines[t.id] = [getattr(e, "lineno", node.lineno) for e in node.value.elts]
    return lines, item_lines


def execute(text, path, extra_vars, tree):
    """Execute ``text`` (already parsed into ``tree``) like xm.

    :returns: :class:`settings.Settings` (``fmt`` ``xm``)
    :raises ConfigError: whatever the file raised, with the line it was on
    """
    filename = path or "<input>"
    locs = dict(extra_vars or {})
    locs.update({"sys": sys, "os": os, "xm_file": path or "", "xm_help": 0})
    locs["xm_vars"] = XmVars(locs["xm_file"], 0, locs)
    try:
        code = compile(text.encode("utf-8") if six.PY2 else text, filename, "exec")
        exec(code, {}, locs)
    except Exception as exc:  # noqa: BLE001 - the user's own code: its boundary, like xm's execfile
        line = None
        tb = sys.exc_info()[2]
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == filename:
                line = tb.tb_lineno
            tb = tb.tb_next
        raise ConfigError(path, line, "executing the cfg (--exec): %s: %s" % (type(exc).__name__, exc))
    options = {}
    for k, v in locs.items():
        if k in SEEDED_NAMES or (extra_vars and k in extra_vars):
            continue
        if type(v) in (str, list, int, float):
            options[k] = v.decode("utf-8") if isinstance(v, binary_type) else v
    lines, item_lines = _assignment_lines(tree)
    return settings_mod.Settings(options, lines, item_lines, "xm")
