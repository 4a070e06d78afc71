"""The crmsh examples of docs/pacemaker.md, run as written by crmsh against
an offline CIB (``CIB_file``): every command is accepted and the clones they
build are what the agent expects (promotable, one promoted of two, notify,
a priority; each clone of the four-host example tied to its pair).

``crm -F``, one session per example: crmsh would otherwise refuse agents this machine lacks
(fence_ipmilan, the agent itself when not installed).  Skipped without
crmsh (tools/host-deps.sh installs it as root); run on Python 3 only, as
crmsh does not depend on the interpreter of the suite.
"""
from __future__ import absolute_import, division, print_function

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(sys.version_info < (3,), reason="crmsh is checked once, on Python 3")


def have(tool):
    return any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def sections(prefix="crm "):
    """``{heading: [command, ...]}`` of the examples whose commands start
    with ``prefix`` (crmsh's by default; continuations joined)."""
    with open(os.path.join(TOP, "docs", "pacemaker.md")) as f:
        text = f.read()
    out = {}
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        head, _, body = part.partition("\n")
        block = "\n".join(ln[4:] for ln in body.splitlines() if ln.startswith("    "))
        cmds = [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip().startswith(prefix)]
        if cmds:
            out[head.strip()] = cmds
    return out


def run_crm(cmds, cib, tmp_path):
    """One crmsh session (``crm -F -f SCRIPT``) running the commands in order."""
    script = str(tmp_path / "crm.script")
    with open(script, "w") as f:
        for cmd in cmds:
            assert cmd.startswith("crm "), cmd
            f.write(cmd[len("crm "):] + "\n")
    env = dict(os.environ, CIB_file=cib)
    proc = subprocess.Popen(["crm", "-F", "-f", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    out = proc.communicate()[0].decode("utf-8", "replace")
    assert proc.returncode == 0, out
    return ET.parse(cib).getroot()


@pytest.fixture
def empty_cib(tmp_path):
    if not (have("crm") and have("cibadmin")):
        pytest.skip("crmsh / cibadmin not installed (tools/host-deps.sh installs them as root)")
    path = str(tmp_path / "cib.xml")
    with open(path, "w") as f:
        f.write(subprocess.check_output(["cibadmin", "--empty"]).decode("utf-8"))
    return path


def clone_meta(root, clone_id):
    for c in root.iter("clone"):
        if c.get("id") == clone_id:
            return dict((nv.get("name"), nv.get("value")) for nv in c.iter("nvpair")
                        if nv.get("id", "").startswith(clone_id))
    raise AssertionError("no clone %s in the CIB" % clone_id)


def check_clone(root, clone_id, domain):
    meta = clone_meta(root, clone_id)
    for k, v in (("promotable", "true"), ("promoted-max", "1"), ("clone-max", "2"), ("notify", "true")):
        assert meta.get(k) == v, (clone_id, k, meta)
    assert int(meta["priority"]) > 0
    prims = [p for c in root.iter("clone") if c.get("id") == clone_id for p in c.iter("primitive")]
    assert [(p.get("class"), p.get("provider"), p.get("type")) for p in prims] == [("ocf", "xen-remus", "remus")]
    params = dict((nv.get("name"), nv.get("value")) for nv in prims[0].find("instance_attributes"))
    assert params["domain"] == domain
    roles = sorted(op.get("role") for op in prims[0].iter("op") if op.get("name") == "monitor")
    assert roles == ["Promoted", "Unpromoted"]


def test_the_docs_have_both_crmsh_examples():
    names = sections()
    assert any("Two hosts (crmsh)" in n for n in names), names
    assert any("Four hosts" in n for n in names), names


def test_two_host_crmsh_example(empty_cib, tmp_path):
    cmds = [c for n, cs in sections().items() if "Two hosts (crmsh)" in n for c in cs]
    root = run_crm(cmds, empty_cib, tmp_path)
    check_clone(root, "vm1-clone", "vm1")
    props = dict((nv.get("name"), nv.get("value")) for nv in root.iter("nvpair")
                 if nv.get("id", "").startswith("cib-bootstrap-options"))
    assert props["stonith-enabled"] == "true" and props["priority-fencing-delay"] == "5s"
    assert len([p for p in root.iter("primitive") if p.get("class") == "stonith"]) == 2


def test_four_host_crmsh_example_ties_each_clone_to_its_pair(empty_cib, tmp_path):
    cmds = [c for n, cs in sections().items() if "Four hosts" in n for c in cs]
    root = run_crm(cmds, empty_cib, tmp_path)
    check_clone(root, "vm1-clone", "vm1")
    check_clone(root, "vm2-clone", "vm2")
    pairs = {}
    for loc in root.iter("rsc_location"):
        for rule in loc.iter("rule"):
            if rule.get("score") == "-INFINITY":
                pairs[loc.get("rsc")] = sorted(e.get("value") for e in rule.iter("expression"))
    assert pairs == {"vm1-clone": ["xen1", "xen2"], "vm2-clone": ["xen3", "xen4"]}
