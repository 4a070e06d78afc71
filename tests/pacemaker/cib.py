"""The promotable clone of one Remus domain as Pacemaker's CIB holds it,
built offline (``cibadmin`` and ``crm_attribute`` on a ``CIB_file``), for
the cluster test and the crm_simulate / crm_resource tests alike."""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

RSC = "remus-vm1"
CLONE = RSC + "-clone"

CLONE_META = (("promotable", "true"), ("promoted-max", "1"), ("promoted-node-max", "1"),
              ("clone-max", "2"), ("clone-node-max", "1"), ("notify", "true"), ("priority", "10"))


def resource_xml(params, provider="xen-remus", ops=None):
    """The clone element.  :param params: the agent's parameters."""
    ops = ops or [("monitor", "3s", "Promoted", "30s"), ("monitor", "4s", "Unpromoted", "30s"),
                  ("promote", "0", None, "30s"), ("demote", "0", None, "120s"),
                  ("start", "0", None, "60s"), ("stop", "0", None, "60s"), ("notify", "0", None, "60s")]
    meta = "".join('<nvpair id="%s-m-%s" name="%s" value="%s"/>' % (CLONE, k, k, v) for k, v in CLONE_META)
    ia = "".join('<nvpair id="%s-p-%s" name="%s" value=%s/>' % (RSC, k, k, quoteattr(v))
                 for k, v in sorted(params.items()))
    op = "".join('<op id="%s-%s-%s" name="%s" interval="%s"%s timeout="%s"/>'
                 % (RSC, name, role or "any", name, interval, ' role="%s"' % role if role else "", timeout)
                 for name, interval, role, timeout in ops)
    return ('<clone id="%s"><meta_attributes id="%s-meta">%s</meta_attributes>'
            '<primitive id="%s" class="ocf" provider="%s" type="remus">'
            '<instance_attributes id="%s-params">%s</instance_attributes>'
            '<operations>%s</operations></primitive></clone>'
            % (CLONE, CLONE, meta, RSC, provider, RSC, ia, op))


def fence_xml(agent, nodes):
    return ('<primitive id="fence-pcmk" class="stonith" type="%s"><instance_attributes id="fence-pcmk-ia">'
            '<nvpair id="fence-pcmk-hl" name="pcmk_host_list" value="%s"/>'
            '<nvpair id="fence-pcmk-hc" name="pcmk_host_check" value="static-list"/>'
            '</instance_attributes><operations><op id="fence-pcmk-mon" name="monitor" interval="60s"/>'
            '</operations></primitive>' % (agent, " ".join(nodes)))


def _run(argv, cib):
    env = dict(os.environ, CIB_file=cib)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), proc.returncode, err.decode("utf-8", "replace")))
    return out.decode("utf-8", "replace")


def build(path, params, nodes=("n1", "n2"), provider="xen-remus", fence_agent="fence_pcmk_remus",
          options=(("stonith-enabled", "true"), ("dc-deadtime", "2s"), ("priority-fencing-delay", "5s"),
                   ("no-quorum-policy", "ignore"))):
    """Write a CIB with the options, the nodes, a fence device and the clone."""
    with open(path, "w") as f:
        f.write(subprocess.check_output(["cibadmin", "--empty"]).decode("utf-8"))
    for name, value in options:
        _run(["crm_attribute", "-t", "crm_config", "-n", name, "-v", value], path)
    for i, n in enumerate(nodes):
        _run(["cibadmin", "-C", "-o", "nodes", "-X", '<node id="%d" uname="%s"/>' % (i + 1, n)], path)
    _run(["cibadmin", "-C", "-o", "resources", "-X", fence_xml(fence_agent, nodes)], path)
    _run(["cibadmin", "-C", "-o", "resources", "-X", resource_xml(params, provider)], path)
    return path


def set_scores(src, dst, scores, rsc=RSC):
    """Copy CIB ``src`` to ``dst`` with the promotion attribute of each node
    in ``scores`` (node -> value; None: no attribute) in its status."""
    tree = ET.parse(src)
    for ns in tree.getroot().iter("node_state"):
        for ta in ns.findall("transient_attributes"):
            ns.remove(ta)
        value = scores.get(ns.get("uname"))
        if value is None:
            continue
        ta = ET.SubElement(ns, "transient_attributes", id=ns.get("id"))
        ia = ET.SubElement(ta, "instance_attributes", id="status-" + ns.get("id"))
        ET.SubElement(ia, "nvpair", id="status-%s-master-%s" % (ns.get("id"), rsc),
                      name="master-" + rsc, value="%s" % value)
    tree.write(dst)
    return dst
