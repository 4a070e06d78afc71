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

import pytest

from tests.unit.test_packaging import TOP, command_tree, long_options, subparsers

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
# the shape of xm's long help: one sub-command a line, indented by one space
case "$1" in
  help) printf 'Usage: xm <subcommand> [args]\n\nxm full list of subcommands:\n\n'
        printf ' %-28s %s\n' create 'Create a domain.' list 'List domains.' \
               migrate 'Migrate a domain.' ;;
  list) printf 'Name    ID   Mem VCPUs State Time(s)\nDomain-0 0 512 2 r----- 9.0\nguest1 3 256 1 -b---- 1.0\n' ;;
  remus-failback) printf 'Usage: xm remus-failback <Domain> <Host> [options]\n\nOptions:\n'
                  printf '   -n, --dry-run   print the plan\n' ;;
  *) exit 1 ;;
esac
"""


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
    bindir = os.path.join(base, "bin")
    os.mkdir(bindir)
    for name, text in (("xen-remus", STUB % {"dir": helps}), ("xm", XM_STUB)):
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
    got = complete(bin_dir, ["xm remus-", "xm cr", "xm remus-failback ", "xm remus-failback --d"])
    assert got[0] == ["remus-failback", "remus-resync", "remus-status"]
    assert got[1] == ["create"]
    assert got[2] == ["guest1"]      # Domain-0 is never a failback candidate
    assert got[3] == ["--dry-run"]
