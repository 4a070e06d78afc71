"""Static checks of the Debian packaging, the manual pages and the completion.

Fast and offline: no package is built here (``make test-deb`` does that).
They hold debian/, docs/man/ and completion/ to the code: versions agree,
every file the packaging installs exists, every ``xen-remus`` command and
long option and every ``xm remus-*`` command is documented, and the troff
and bash sources parse.
"""
from __future__ import absolute_import, division, print_function

import io
import os
import re
import stat
import subprocess

import pytest

import xen_remus_ext
from xen_remus_ext.cli import main as cli

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN_DIR = os.path.join(TOP, "docs", "man")
PACKAGE = "xen-remus-ext"
#: the Python 3 packages of Debian 12 the package must depend on
RUNTIME_DEPENDS = ("python3-pyxs", "python3-lxml", "python3-six", "python3-xxhash", "python3-tqdm",
                   "python3-zstandard", "openssl")


def read(*parts):
    with io.open(os.path.join(TOP, *parts), encoding="utf-8") as f:
        return f.read()


def control_paragraphs():
    """debian/control as a list of dicts (continuation lines joined)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", read("debian", "control").strip()):
        fields = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        paragraphs.append(fields)
    return paragraphs


def relation_names(value):
    """``a (>= 1), b | c, ${misc:Depends}`` -> ['a', 'b', 'c']"""
    names = []
    for alternative in re.split(r"[,|]", value):
        alternative = alternative.strip()
        if alternative and not alternative.startswith("${"):
            names.append(alternative.split()[0])
    return names


def subparsers(parser):
    """{name: parser} of an argparse parser's sub-commands (empty if none)."""
    import argparse
    for action in parser._actions:  # argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_tree(parser=None, path=()):
    """Yields ``(path, parser)`` for the ``xen-remus`` parser and every
    (sub-)sub-command under it."""
    parser = parser or cli.build_parser()
    yield path, parser
    for name, sub in sorted(subparsers(parser).items()):
        for item in command_tree(sub, path + (name,)):
            yield item


def long_options(parser):
    out = []
    for action in parser._actions:
        if action.help == "==SUPPRESS==":
            continue
        out.extend(o for o in action.option_strings if o.startswith("--"))
    return out


def troff_escape(word):
    return word.replace("-", "\\-")


def man_text(name):
    return read("docs", "man", name)


# --- debian/ ---------------------------------------------------------------------

def test_control_uses_debhelper_13_and_pybuild():
    source = control_paragraphs()[0]
    build_deps = relation_names(source["Build-Depends"])
    assert "debhelper-compat" in build_deps
    assert re.search(r"debhelper-compat \(= 13\)", source["Build-Depends"]), source["Build-Depends"]
    assert "dh-python" in build_deps
    rules = read("debian", "rules")
    assert "--buildsystem=pybuild" in rules
    assert "--with python3" in rules
    mode = os.stat(os.path.join(TOP, "debian", "rules")).st_mode
    assert mode & stat.S_IXUSR, "debian/rules must be executable"


def test_binary_package_depends_on_debian_python3_packages():
    paragraphs = control_paragraphs()
    assert [p.get("Package") for p in paragraphs[1:]] == [PACKAGE]
    binary = paragraphs[1]
    assert binary["Architecture"] == "all"
    depends = relation_names(binary["Depends"])
    missing = [d for d in RUNTIME_DEPENDS if d not in depends]
    assert not missing, "debian/control Depends lacks %s" % (missing,)
    assert "${python3:Depends}" in binary["Depends"]


def test_changelog_version_matches_setup_and_module():
    head = read("debian", "changelog").splitlines()[0]
    m = re.match(r"^(\S+) \(([^)]+)\) \S+; urgency=\w+$", head)
    assert m, "bad first changelog line: %r" % (head,)
    assert m.group(1) == PACKAGE
    setup_version = re.search(r'version="([^"]+)"', read("setup.py")).group(1)
    # a native package: the Debian version is the upstream version
    assert m.group(2) == setup_version == xen_remus_ext.__version__


def test_every_file_the_packaging_installs_exists():
    listed = []
    for name in ("manpages", "docs", "install"):
        path = os.path.join(TOP, "debian", "%s.%s" % (PACKAGE, name))
        for line in read(path).splitlines():
            if line.strip() and not line.startswith("#"):
                listed.append(line.split()[0])
    assert listed
    missing = [p for p in listed if not os.path.exists(os.path.join(TOP, p))]
    assert not missing, "listed in debian/ but absent: %s" % (missing,)
    pages = read("debian", PACKAGE + ".manpages").split()
    on_disk = ["docs/man/" + n for n in os.listdir(MAN_DIR) if re.match(r".*\.[1-8]$", n)]
    assert sorted(on_disk) == sorted(pages), "docs/man/ and debian/%s.manpages differ" % PACKAGE


def test_maintainer_scripts_are_posix_sh_and_purge_the_state_dir():
    postrm = read("debian", PACKAGE + ".postrm")
    assert "purge)" in postrm and "rm -rf /var/lib/xen-remus-ext" in postrm
    for script in ("postinst", "postrm"):
        text = read("debian", "%s.%s" % (PACKAGE, script))
        assert text.startswith("#!/bin/sh\n")
        assert "#DEBHELPER#" in text
        rc = subprocess.call(["sh", "-n", os.path.join(TOP, "debian", "%s.%s" % (PACKAGE, script))])
        assert rc == 0, script


# --- manual pages ------------------------------------------------------------------

def man_pages():
    return sorted(n for n in os.listdir(MAN_DIR) if n.endswith(".1"))


@pytest.mark.parametrize("page", man_pages())
def test_man_page_header_names_the_file_and_version(page):
    th = [line for line in man_text(page).splitlines() if line.startswith(".TH ")]
    assert len(th) == 1, page
    title = page[:-2].upper().replace("-", "\\-")
    assert th[0].startswith(".TH %s 1 " % title), th[0]
    assert "xen\\-remus\\-ext %s" % xen_remus_ext.__version__ in th[0], th[0]


def _groff():
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        if os.access(os.path.join(d, "groff"), os.X_OK):
            return os.path.join(d, "groff")
    return None


@pytest.mark.skipif(_groff() is None, reason="groff is not installed")
@pytest.mark.parametrize("page", man_pages())
def test_man_page_formats_without_warnings(page):
    proc = subprocess.Popen([_groff(), "-man", "-ww", "-z", "-Tutf8", os.path.join(MAN_DIR, page)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    assert proc.returncode == 0 and not err.strip(), err.decode("utf-8", "replace")


def test_every_xen_remus_command_is_in_the_man_page():
    text = man_text("xen-remus.1")
    missing = []
    for path, _parser in command_tree():
        if not path:
            continue
        words = " ".join(troff_escape(w) for w in path)
        # as the bold head of an item: `.B config show ...` or `.B demo`
        if not re.search(r"^\.B %s(\s|$)" % re.escape(words), text, re.M):
            missing.append(" ".join(path))
    assert not missing, "docs/man/xen-remus.1 does not describe: %s" % ", ".join(missing)


def pages_for_command(path):
    """The man pages that document ``xen-remus PATH...``: xen-remus.1, and
    for the targets of ``xm remus-*`` commands their xm-remus-*.1 page."""
    pages = ["xen-remus.1"]
    try:
        from xen_remus_ext.xm import commands as xm_commands
    except ImportError:
        return pages
    for cmd in xm_commands.COMMANDS:
        if path[:1] == (cmd.target,):
            pages.append("xm-%s.1" % cmd.name)
    return pages


def test_every_long_option_is_in_its_man_page():
    missing = []
    for path, parser in command_tree():
        text = "\n".join(man_text(p) for p in pages_for_command(path) if p in man_pages())
        for opt in long_options(parser):
            if opt == "--help":
                continue
            if troff_escape(opt) not in text:
                missing.append("%s %s (%s)" % (" ".join(("xen-remus",) + path), opt,
                                              " or ".join(pages_for_command(path))))
    assert not missing, "options not in their page under docs/man/: %s" % "; ".join(missing)


def test_every_xm_command_has_its_page():
    xm_commands = pytest.importorskip("xen_remus_ext.xm.commands")
    for cmd in xm_commands.COMMANDS:
        page = "xm-%s.1" % cmd.name
        assert page in man_pages(), "docs/man/%s is missing" % page
        text = man_text(page)
        assert ".B xm %s" % troff_escape(cmd.name) in text
        assert ".B xen\\-remus %s" % troff_escape(cmd.target) in text


# --- bash completion -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["xen-remus", "xm"])
def test_completion_parses_and_registers(name):
    path = os.path.join(TOP, "completion", name)
    assert subprocess.call(["bash", "-n", path]) == 0
    assert re.search(r"^\s*complete -F \w+ %s$" % re.escape(name), read(path), re.M)


def test_every_installed_script_has_a_man_page_or_is_left_out():
    scripts = re.findall(r'"([\w.-]+) = [\w.]+:\w+"', read("setup.py"))
    assert "xen-remus" in scripts
    rules = read("debian", "rules")
    for name in scripts:
        page = os.path.exists(os.path.join(MAN_DIR, name + ".1"))
        dropped = "rm -f debian/%s/usr/bin/%s" % (PACKAGE, name) in rules
        assert page != dropped, "%s: expected a man page in docs/man/ or removal in debian/rules " \
                                "(exactly one), got page=%s removed=%s" % (name, page, dropped)


def test_xen_remus_page_names_every_xm_command():
    """The description, the xm-modules item and SEE ALSO of xen-remus(1) name each xm remus-* command."""
    xm_commands = pytest.importorskip("xen_remus_ext.xm.commands")
    text = man_text("xen-remus.1")
    description = text.split(".SH DESCRIPTION", 1)[1].split(".SH ", 1)[0]
    modules = text.split(".B xm\\-modules", 1)[1].split(".TP", 1)[0]
    see_also = text.split(".SH SEE ALSO", 1)[1]
    for cmd in xm_commands.COMMANDS:
        name = troff_escape(cmd.name)
        assert "xm %s" % name in description, cmd.name
        assert "%s.py" % name in modules, cmd.name
        assert ".BR xm\\-%s (1)" % name in see_also, cmd.name


def test_every_toolstack_option_states_the_default_the_code_uses():
    """wiring.default_toolstack_kind: xend when it runs here, else xl when present, else xend."""
    rule = "xend if it runs here, else xl if present, else xend"
    wrong = []
    for path, parser in command_tree():
        for action in parser._actions:
            if "--toolstack" in action.option_strings and rule not in " ".join((action.help or "").split()):
                wrong.append(" ".join(path))
    assert not wrong, "--toolstack help without the default rule: %s" % ", ".join(wrong)
    for page in man_pages():
        text = " ".join(man_text(page).split())
        if ".BR \\-\\-toolstack" in text and "uses .B xl when it is installed, else .BR xend ." in text:
            wrong.append(page)
    assert not wrong, "man pages naming xl before a running xend: %s" % ", ".join(wrong)
