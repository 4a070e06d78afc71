"""The pcs examples of docs/pacemaker.md, run as written by pcs against an
offline CIB (``pcs -f FILE``, no pcsd needed), and compared with what the
crmsh examples of the same sections build: the same properties, fence
devices, primitive (parameters and operations), clone meta attributes and
location constraints, after normalising what differs only in spelling
(generated ids, ``0`` against ``0s``, a node location against the
equivalent ``#uname eq`` rule).

pcs refuses an agent it cannot query; the agents of the examples
(``fence_ipmilan``, ``ocf:xen-remus:remus``) are not installed on a test
machine, so each command that pcs refuses for that reason alone is run again
with ``--force``, and every warning pcs then prints must be one of the
expected kinds (agent not installed, operation names it could not check
against that agent's metadata, node names it cannot check offline).
Skipped without pcs or crmsh (tools/host-deps.sh installs both as root);
Python 3 only, as neither depends on the suite's interpreter.
"""
from __future__ import absolute_import, division, print_function

import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.pacemaker.test_docs_crmsh import have, run_crm, sections
from xen_remus_ext.pacemaker import decide

pytestmark = pytest.mark.skipif(sys.version_info < (3,), reason="pcs is checked once, on Python 3")

DOC_AGENTS = ("stonith:fence_ipmilan", "ocf:xen-remus:remus")
AGENT_ACTIONS = set(re.findall(r'<action name="([a-z-]+)"', decide.META_DATA))


def _expected_warning(line):
    m = re.match(r"Warning: Agent '([^']+)' is not installed or does not provide valid metadata", line)
    if m:
        return m.group(1) in DOC_AGENTS
    m = re.match(r"Warning: '([a-z-]+)' is not a valid operation name value$", line)
    if m:       # checked against the agent's metadata, which pcs could not read
        return m.group(1) in AGENT_ACTIONS
    return line == "Warning: Validation for node existence in the cluster will be skipped"


def run_pcs(cmds, cib):
    """Each ``pcs ...`` command on the offline CIB; :returns: the CIB root."""
    for cmd in cmds:
        argv = shlex.split(cmd)
        assert argv[0] == "pcs", cmd
        argv = ["pcs", "-f", cib] + argv[1:]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.communicate()[0].decode("utf-8", "replace")
        if proc.returncode != 0:
            refused = [ln for ln in out.splitlines() if ln.startswith("Error:")]
            assert refused and all("is not installed or does not provide valid metadata" in ln
                                   or "unable to continue" in ln for ln in refused), (cmd, out)
            proc = subprocess.Popen(argv + ["--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out = proc.communicate()[0].decode("utf-8", "replace")
            assert proc.returncode == 0, (cmd, out)
        unexpected = [ln for ln in out.splitlines() if ln.strip() and not _expected_warning(ln.strip())]
        assert not unexpected, (cmd, unexpected)
    return ET.parse(cib).getroot()


def _seconds(value):
    m = re.match(r"^(\d+)(ms|s|m|min|h)?$", value or "0")
    assert m, value
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def _nv(elem, tag):
    sets = [e for e in elem if e.tag == tag]
    return dict((nv.get("name"), nv.get("value")) for s in sets for nv in s.iter("nvpair"))


def _primitive(p, with_ops):
    ops = None
    if with_ops:
        ops = sorted((op.get("name"), _seconds(op.get("interval")), op.get("role") or "",
                      _seconds(op.get("timeout")) if op.get("timeout") else None)
                     for op in p.iter("op"))
    return (p.get("class"), p.get("provider"), p.get("type"), _nv(p, "instance_attributes"), ops)


def _rule(score, role, boolean, expressions):
    return (score, role or "", boolean or "and",
            tuple(sorted((e.get("attribute"), e.get("operation"), e.get("value")) for e in expressions)))


def normalised(root):
    """What a CIB configures, with the ids and spellings tools choose left out."""
    conf = root.find("configuration")
    props = _nv(conf.find("crm_config"), "cluster_property_set")
    prims, clones = {}, {}
    for elem in conf.find("resources"):
        if elem.tag == "primitive":
            # pcs gives a fence device a 60 s monitor op, crmsh none (Pacemaker's
            # default is the same 60 s): the device's parameters are compared
            prims[elem.get("id")] = _primitive(elem, with_ops=False)
        elif elem.tag == "clone":
            child = elem.find("primitive")
            clones[elem.get("id")] = (child.get("id"), _primitive(child, with_ops=True),
                                      _nv(elem, "meta_attributes"))
    locs = []
    for loc in conf.find("constraints").iter("rsc_location"):
        if loc.get("node"):
            rule = _rule(loc.get("score"), loc.get("role"), "and",
                         [ET.Element("expression", attribute="#uname", operation="eq", value=loc.get("node"))])
            locs.append((loc.get("rsc"), rule))
        for r in loc.findall("rule"):
            locs.append((loc.get("rsc"), _rule(r.get("score"), r.get("role") or loc.get("role"),
                                               r.get("boolean-op"), r.findall("expression"))))
    return {"properties": props, "primitives": prims, "clones": clones, "locations": sorted(locs)}


@pytest.fixture
def cibs(tmp_path):
    if not (have("pcs") and have("crm") and have("cibadmin")):
        pytest.skip("pcs / crmsh / cibadmin not installed (tools/host-deps.sh installs them as root)")
    out = []
    for name in ("pcs.xml", "crm.xml"):
        path = str(tmp_path / name)
        with open(path, "w") as f:
            f.write(subprocess.check_output(["cibadmin", "--empty"]).decode("utf-8"))
        out.append(path)
    return out


def _both(heading, cibs, tmp_path):
    pcs_cmds = [c for n, cs in sections("pcs ").items() if heading in n for c in cs]
    crm_cmds = [c for n, cs in sections("crm ").items() if heading in n for c in cs]
    assert pcs_cmds and crm_cmds, heading
    return normalised(run_pcs(pcs_cmds, cibs[0])), normalised(run_crm(crm_cmds, cibs[1], tmp_path))


def test_two_host_pcs_example_builds_what_the_crmsh_one_does(cibs, tmp_path):
    # the two examples are two sections: the crmsh one, then the pcs one
    pcs_cmds = [c for n, cs in sections("pcs ").items() if "Two hosts (pcs)" in n for c in cs]
    crm_cmds = [c for n, cs in sections("crm ").items() if "Two hosts (crmsh)" in n for c in cs]
    assert pcs_cmds and crm_cmds
    got = normalised(run_pcs(pcs_cmds, cibs[0]))
    want = normalised(run_crm(crm_cmds, cibs[1], tmp_path))
    assert got == want
    # and what that is: fencing with a priority delay, both fence devices
    # kept off the node they fence, the promotable clone of the agent
    assert got["properties"] == {"stonith-enabled": "true", "priority-fencing-delay": "5s"}
    assert sorted(got["primitives"]) == ["fence-xen1", "fence-xen2"]
    assert ("fence-xen1", ("-INFINITY", "", "and", (("#uname", "eq", "xen1"),))) in got["locations"]
    child, prim, meta = got["clones"]["vm1-clone"]
    assert child == "vm1" and prim[:3] == ("ocf", "xen-remus", "remus")
    assert meta["promotable"] == "true" and meta["promoted-max"] == "1" and meta["notify"] == "true"
    assert ("monitor", 10, "Promoted", 30) in prim[4] and ("monitor", 11, "Unpromoted", 30) in prim[4]


def test_four_host_pcs_example_builds_what_the_crmsh_one_does(cibs, tmp_path):
    got, want = _both("Four hosts", cibs, tmp_path)
    assert got == want
    pairs = dict((rsc, [e[2] for e in rule[3]]) for rsc, rule in got["locations"] if rule[0] == "-INFINITY")
    assert pairs == {"vm1-clone": ["xen1", "xen2"], "vm2-clone": ["xen3", "xen4"]}
    prefer = [(rsc, rule[1], rule[3]) for rsc, rule in got["locations"] if rule[0] == "50"]
    assert prefer == [("vm1-clone", "Promoted", (("#uname", "eq", "xen1"),)),
                      ("vm2-clone", "Promoted", (("#uname", "eq", "xen3"),))]
