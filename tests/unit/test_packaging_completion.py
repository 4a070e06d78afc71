"""The bash completion of ``xen-remus`` and ``xm``, run in a real bash with
bash-completion, against the real ``--help`` texts of this build's parser.

The completion reads commands and options from ``xen-remus ... --help``.
Here ``xen-remus`` on PATH is a small script serving the help texts that
:func:`xen_remus_ext.cli.main.build_parser` formats in this process, so the
test needs no installed package and starts no Python per keystroke.
"""
from __future__ import absolute_import, division, print_function

import io
import os
import stat
import subprocess
import sys

import pytest

from tests.unit.test_packaging import TOP, command_tree, long_options, subparsers
from xen_remus_ext.cli import main as cli

BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"

pytestmark = pytest.mark.skipif(not os.path.exists(BASH_COMPLETION),
                                reason="bash-completion is not installed")

STUB = r"""#!/bin/bash
# serves `xen-remus WORDS... --help` from files written by the test
[ "${@: -1}" = --help ] || { echo "stub: unexpected argv: $*" >&2; exit 2; }
args=("${@:1:$#-1}")
key="${args[*]}"; key=${key// /+}; [ -n "$key" ] || key=@
[ -f "%(dir)s/$key" ] || { echo "usage: stub: no help for $key" >&2; exit 2; }
cat "%(dir)s/$key"
"""

XM_STUB = r"""#!/bin/bash
# serves `xm help`, `xm CMD --help` and `xm list` from files written by the test
case "$1" in
  help) cat "%(dir)s/xm-help" ;;
  list) printf 'Name    ID   Mem VCPUs State Time(s)\nDomain-0 0 512 2 r----- 9.0\nguest1 3 256 1 -b---- 1.0\n' ;;
  *) [ "$2" = --help ] && [ -f "%(dir)s/xm-$1" ] && cat "%(dir)s/xm-$1" && exit 1
     echo "stub: unexpected argv: $*" >&2; exit 2 ;;
esac
"""


def xm_help_texts():
    """``xm help`` and ``xm remus-* --help`` as the xm double prints them once
    our commands are registered from this build's parser.

    :returns: ({file name: text}, {xm command: [long options]})
    """
    six = pytest.importorskip("six")
    xm_main = pytest.importorskip("tests.fakes.xm_main")
    xm_commands = pytest.importorskip("xen_remus_ext.xm.commands")
    xm_register = pytest.importorskip("xen_remus_ext.xm.register")
    parser = cli.build_parser()
    six.moves.reload_module(xm_main)
    try:
        xm_register.register(xm_main, parser=parser)
        texts, options = {}, {}
        saved = sys.stdout
        try:
            sys.stdout = six.StringIO()
            xm_main.longHelp()
            texts["xm-help"] = sys.stdout.getvalue()
            for cmd in xm_commands.COMMANDS:
                sys.stdout = six.StringIO()
                xm_main.cmdHelp(cmd.name)
                texts["xm-" + cmd.name] = sys.stdout.getvalue()
                sub = xm_commands.subparser_for(parser, cmd.target)
                rows = xm_commands.options_for(sub) if sub is not None else ()
                options[cmd.name] = [row[1].split("=")[0] for row in rows if row[1]]
        finally:
            sys.stdout = saved
    finally:
        six.moves.reload_module(xm_main)
    return texts, options


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("completion"))
    helps = os.path.join(base, "help")
    os.mkdir(helps)
    os.environ["COLUMNS"] = "200"  # argparse wraps help at this width
    try:
        for path, parser in command_tree():
            key = "+".join(path) or "@"
            with io.open(os.path.join(helps, key), "w", encoding="utf-8") as f:
                f.write(u"%s" % parser.format_help())
    finally:
        del os.environ["COLUMNS"]
    for name, text in xm_help_texts()[0].items():
        with io.open(os.path.join(helps, name), "w", encoding="utf-8") as f:
            f.write(u"%s" % text)
    bindir = os.path.join(base, "bin")
    os.mkdir(bindir)
    for name, text in (("xen-remus", STUB % {"dir": helps}), ("xm", XM_STUB % {"dir": helps})):
        p = os.path.join(bindir, name)
        with io.open(p, "w", encoding="utf-8") as f:
            f.write(u"%s" % text)
        os.chmod(p, stat.S_IRWXU)
    return bindir


def complete(bin_dir, lines):
    """Runs the completion for each command line (cursor at the end) in one
    bash; :returns: one sorted list of candidates per line."""
    script = r"""
. %(bc)s
. %(top)s/completion/xen-remus
. %(top)s/completion/xm
while IFS= read -r line; do
    COMP_LINE=$line; COMP_POINT=${#line}
    read -r -a COMP_WORDS <<<"$line"; [[ $line == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    case ${COMP_WORDS[0]} in xm) fn=_xm_remus ;; *) fn=_xen_remus ;; esac
    $fn "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    echo "${COMPREPLY[*]}"
done
""" % {"bc": BASH_COMPLETION, "top": TOP}
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), HOME=bin_dir)
    proc = subprocess.Popen(["bash", "--norc", "--noprofile", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate(("\n".join(lines) + "\n").encode("utf-8"))
    assert proc.returncode == 0, err
    results = out.decode("utf-8").split("\n")[:len(lines)]
    assert len(results) == len(lines), (out, err)
    return [sorted(r.split()) for r in results]


def test_commands_and_subcommands_follow_the_parser(bin_dir):
    tree = [(path, parser) for path, parser in command_tree() if subparsers(parser)]
    lines = ["xen-remus %s " % " ".join(path) if path else "xen-remus " for path, _ in tree]
    # an option before the command (and its value) does not hide the command
    lines.append("xen-remus -v ")
    got = complete(bin_dir, lines)
    for (path, parser), words in zip(tree, got):
        assert words == sorted(subparsers(parser)), path
    assert got[-1] == got[0]


def test_prefix_completes_to_one_command(bin_dir):
    names = sorted(subparsers(next(command_tree())[1]))
    assert names
    # the shortest unique prefix of each command
    lines, expected = [], []
    for name in names:
        for n in range(1, len(name) + 1):
            if [m for m in names if m.startswith(name[:n])] == [name]:
                lines.append("xen-remus " + name[:n])
                expected.append([name])
                break
    assert complete(bin_dir, lines) == expected


def test_every_long_option_is_offered(bin_dir):
    tree = list(command_tree())
    lines = ["xen-remus %s --" % " ".join(path) if path else "xen-remus --" for path, _ in tree]
    for (path, parser), words in zip(tree, complete(bin_dir, lines)):
        missing = [o for o in long_options(parser) if o not in words]
        assert not missing, "xen-remus %s: %s not offered" % (" ".join(path), missing)


def test_option_choices_are_offered(bin_dir):
    cases = []
    for path, parser in command_tree():
        for action in parser._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if action.choices and longs:
                cases.append(("xen-remus %s %s " % (" ".join(path), longs[0]),
                              sorted(str(c) for c in action.choices)))
    if not cases:
        pytest.skip("no option with choices in this build")
    got = complete(bin_dir, [line for line, _ in cases])
    assert got == [choices for _, choices in cases]


def test_xm_commands_domains_and_options(bin_dir):
    got = complete(bin_dir, ["xm remus-", "xm mig", "xm remus-failback ", "xm remus-failback guest1 ",
                             "xm remus-status guest1 "])
    assert got[0] == ["remus-failback", "remus-protect", "remus-resync", "remus-status"]
    assert got[1] == ["migrate"]     # xm's own commands come from `xm help`
    assert got[2] == ["guest1"]      # Domain-0 is never a failback candidate
    assert got[4] == []              # remus-status takes one domain, no host


def test_xm_remus_options_follow_the_registered_tables(bin_dir):
    _texts, options = xm_help_texts()
    names = sorted(options)
    got = complete(bin_dir, ["xm %s --" % name for name in names])
    for name, words in zip(names, got):
        missing = [o for o in options[name] if o not in words]
        assert not missing, "xm %s: %s not offered (got %s)" % (name, missing, words)
        assert "--help" in words
