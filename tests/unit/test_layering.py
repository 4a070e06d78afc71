"""The package's import graph keeps its layers.

Every import of every module (function-level ones included) is read from
the source with :mod:`ast` and resolved to a module of the package.  From
the bottom up:

=========  ===========================================================
base       errors, compat, paths, log, model, ports
core       config/, failback/, status_keys, and resync's plan, protocol,
           metadata and the other pure parts of the engine
adapters   toolstack/, trackers/, sim/, resync's transports (TLS too), sessions
           and api, resync/disksync, replication/ (but for its pure
           stream, wire and epochs modules: core)
root       wiring (the composition root: the only place choosing adapters)
front      cli/, xm/ (the xm front end), xend/ and hooks/ (what xend
           loads or runs; xend/xend_config, the xend-config.sxp reader and
           editor, and xend/hold, the held backup's stream mark and record,
           are core), pacemaker/ (the OCF agent), demo, __main__
=========  ===========================================================

A module imports only from its own layer or below, with three more rules:
adapters never import the orchestration (``failback``), the xm front end
never imports the ``xen-remus`` entry (``cli.main``), and the demo takes its
adapters from the composition root as the commands do (``ROOT_ONLY``: of the
adapters it imports only the simulated cluster itself).  Only adapters, the
root and the integrations among the front ends (xend's, Pacemaker's) import
``subprocess`` or ``socket``; the commands of ``cli/`` and ``xm/`` go through
the composition root (``IO_EXCEPTIONS`` names the one that does not yet).
"""
from __future__ import absolute_import, division, print_function

import ast
import io
import os

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(TOP, "xen_remus_ext")

BASE, CORE, ADAPTERS, ROOT, FRONT = range(5)
LAYER_NAMES = ("base", "core", "adapters", "root", "front")

#: module (or package) prefix -> layer; the longest prefix wins
LAYERS = {
    "errors": BASE, "compat": BASE, "paths": BASE, "log": BASE, "model": BASE, "ports": BASE,
    "__init__": BASE,
    "config": CORE, "failback": CORE, "status_keys": CORE, "resync": CORE,
    "toolstack": ADAPTERS, "trackers": ADAPTERS, "sim": ADAPTERS,
    "replication": ADAPTERS, "replication.stream": CORE, "replication.wire": CORE, "replication.epochs": CORE,
    "resync.transport": ADAPTERS, "resync.api": ADAPTERS, "resync.sender": ADAPTERS,
    "resync.receiver": ADAPTERS, "resync.disksync": ADAPTERS, "resync.tls": ADAPTERS,
    "xend.xend_config": CORE,   # reading and editing xend-config.sxp: pure but for the file itself
    "xend.hold": CORE,          # the held backup's stream mark and record: pure but for the record file
    "wiring": ROOT,
    "cli": FRONT, "xm": FRONT, "xend": FRONT, "hooks": FRONT, "pacemaker": FRONT, "demo": FRONT,
    "__main__": FRONT,
}

#: front-end modules that get every adapter from the root (wiring.open_site),
#: with the adapter modules they may still import and why
ROOT_ONLY = {
    "demo": {"sim.cluster": "starts, kills and inspects the simulated hosts themselves"},
}

#: the modules whose job is talking to processes and sockets: the adapters,
#: the root, and the front ends that are themselves integrations (the OCF
#: agent talks to Pacemaker's tools; xend's hook and methods run inside xend)
IO_LAYERS = (ADAPTERS, ROOT)
IO_FRONTS = ("pacemaker", "xend", "hooks")
IO_MODULES = ("subprocess", "socket")
#: front-end modules that still open sockets or start children themselves,
#: each with what should take it over
IO_EXCEPTIONS = {
}


def may_do_io(mod):
    if layer_of(mod) in IO_LAYERS or mod in IO_EXCEPTIONS:
        return True
    return layer_of(mod) == FRONT and mod.split(".")[0] in IO_FRONTS


def layer_of(mod):
    """The layer of ``mod``; a package not in :data:`LAYERS` yet counts as a
    front end (it may import anything; the core importing it is reported)."""
    parts = mod.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return FRONT


def modules():
    """``{dotted name without the package: path}`` of every module."""
    out = {}
    for d, dirs, files in os.walk(PKG):
        dirs[:] = [x for x in dirs if not x.startswith((".", "__pycache__"))]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(d, f), PKG)[:-3].replace(os.sep, ".")
            if rel.endswith(".__init__"):
                rel = rel[:-len(".__init__")]
            out[rel] = os.path.join(d, f)
    return out


MODULES = modules()


def _resolve(name):
    """``xen_remus_ext.a.b`` -> the longest known module ``a.b`` or ``a``
    (a name of the package itself, e.g. ``__version__``: the package)."""
    parts = name.split(".")[1:]
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in MODULES:
            return cand
    return "__init__"


def imports_of(mod):
    """``[(line, imported)]``: package modules as dotted names without the
    package, other modules as ``"!name"``."""
    path = MODULES[mod]
    with io.open(path, "rb") as f:     # bytes: 2.7 refuses a coding line in a unicode source
        tree = ast.parse(f.read(), path)
    pkg = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".") if pkg else []
                up = up[:len(up) - (node.level - 1)] if node.level > 1 else up
                base = ".".join(["xen_remus_ext"] + up + ([base] if base else []))
            names = [base + "." + a.name for a in node.names] if base.startswith("xen_remus_ext") else [base]
        for name in names:
            if name == "xen_remus_ext" or name.startswith("xen_remus_ext."):
                out.append((node.lineno, _resolve(name)))
            else:
                out.append((node.lineno, "!" + name.split(".")[0]))
    return out


def violations():
    found = []
    for mod in sorted(MODULES):
        mine = layer_of(mod)
        for line, imp in imports_of(mod):
            where = "xen_remus_ext/%s.py:%d" % (mod.replace(".", "/"), line)
            if imp.startswith("!"):
                if imp[1:] in IO_MODULES and not may_do_io(mod):
                    found.append("%s: %s (%s) imports %s" % (where, mod, LAYER_NAMES[mine], imp[1:]))
                continue
            theirs = layer_of(imp)
            if theirs > mine:
                found.append("%s: %s (%s) imports %s (%s)"
                             % (where, mod, LAYER_NAMES[mine], imp, LAYER_NAMES[theirs]))
            elif mine == ADAPTERS and (imp == "failback" or imp.startswith("failback.")):
                found.append("%s: adapter %s imports the orchestration %s" % (where, mod, imp))
            elif mod in ROOT_ONLY and theirs == ADAPTERS and imp not in ROOT_ONLY[mod]:
                found.append("%s: %s imports the adapter %s (it takes adapters from wiring.open_site)"
                             % (where, mod, imp))
            elif (mod == "xm" or mod.startswith("xm.")) and imp == "cli.main":
                found.append("%s: the xm front end %s imports the xen-remus entry cli.main" % (where, mod))
    return found


def test_no_import_goes_up_a_layer():
    assert violations() == []


@pytest.mark.parametrize("source,expected", [
    ("from xen_remus_ext.sim import host\n", "failback.fake (core) imports sim.host (adapters)"),
    ("import subprocess\n", "failback.fake (core) imports subprocess"),
    ("def f():\n    from xen_remus_ext.cli import main\n", "failback.fake (core) imports cli.main (front)"),
    ("from xen_remus_ext import wiring\n", "failback.fake (core) imports wiring (root)"),
])
def test_the_check_sees_a_bad_import(tmp_path, monkeypatch, source, expected):
    """A module put into failback/ with a bad import is reported, lazy imports included."""
    fake = tmp_path / "fake.py"
    fake.write_text(u"from __future__ import absolute_import\n" + source)
    monkeypatch.setitem(MODULES, "failback.fake", str(fake))
    got = [v for v in violations() if "failback.fake" in v]
    assert len(got) == 1 and expected in got[0], got


@pytest.mark.parametrize("mod,source,expected", [
    ("sim.fake", "from xen_remus_ext.failback import machine\n", "adapter sim.fake imports the orchestration"),
    ("xm.fake", "from xen_remus_ext.cli import main as cli_main\n", "the xm front end xm.fake imports"),
    ("demo", "from xen_remus_ext.sim.cluster import Cluster\n"
             "def f():\n    from xen_remus_ext.sim.disksync import SimDiskSync\n",
     "demo imports the adapter sim.disksync (it takes adapters from wiring.open_site)"),
    ("demo", "from xen_remus_ext.sim.cluster import Cluster\nfrom xen_remus_ext.sim import toolstack\n",
     "demo imports the adapter sim.toolstack"),
])
def test_the_two_extra_rules(tmp_path, monkeypatch, mod, source, expected):
    fake = tmp_path / "fake.py"
    fake.write_text(u"from __future__ import absolute_import\n" + source)
    monkeypatch.setitem(MODULES, mod, str(fake))
    got = [v for v in violations() if mod in v]
    assert len(got) == 1 and expected in got[0], got


def test_the_protocol_shuts_sockets_down_both_ways():
    """resync/protocol.py spells ``socket.SHUT_RDWR`` out so as not to import socket."""
    import socket
    from xen_remus_ext.resync import protocol
    assert protocol.SHUT_RDWR == socket.SHUT_RDWR


def test_a_command_module_starting_processes_is_reported(tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text(u"from __future__ import absolute_import\nimport subprocess\n")
    monkeypatch.setitem(MODULES, "cli.fake_cmd", str(fake))
    got = [v for v in violations() if "cli.fake_cmd" in v]
    assert len(got) == 1 and "cli.fake_cmd (front) imports subprocess" in got[0], got
