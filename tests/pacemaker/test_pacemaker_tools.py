"""The agent under Pacemaker's own offline tools: xmllint against
ra-api-1.dtd, ocf-tester against the simulated pair, crm_resource
--validate and --force-*, crm_simulate on CIBs holding the clone.

Each test SKIPs when its tool is not installed (tools/host-deps.sh
installs pacemaker-cli-utils, resource-agents and libxml2-utils as root).
"""
from __future__ import absolute_import, division, print_function

import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from tests.pacemaker import cib
from tests.pacemaker.simpair import DOMAIN, SimPair
from xen_remus_ext.compat import pid_exists
from xen_remus_ext.pacemaker import decide

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.path.join(TOP, "ocf", "remus")
DTD = [p for p in ("/usr/share/resource-agents/ra-api-1.dtd", "/usr/lib/ocf/ra-api-1.dtd") if os.path.exists(p)]


def need(*tools):
    for t in tools:
        if shutil.which(t) is None if hasattr(shutil, "which") else not _which(t):
            pytest.skip("%s not installed (tools/host-deps.sh installs it as root)" % t)


def _which(name):
    return any(os.access(os.path.join(d, name), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep))


def run(argv, env=None, cwd=None):
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    out, _ = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace")


@pytest.fixture
def pair(tmp_path):
    p = SimPair(str(tmp_path))
    try:
        yield p
    finally:
        p.close()


def test_meta_data_validates_against_ra_api_dtd(tmp_path):
    need("xmllint")
    if not DTD:
        pytest.skip("ra-api-1.dtd not installed (resource-agents)")
    xml = tmp_path / "meta.xml"
    rc, out = run(["sh", "-c", "XEN_REMUS_OCF_CMD=%s %s meta-data > %s"
                   % (_command(tmp_path), AGENT, xml)])
    assert rc == 0, out
    rc, out = run(["xmllint", "--noout", "--dtdvalid", DTD[0], str(xml)])
    assert rc == 0, out
    bad = tmp_path / "bad.xml"
    bad.write_text(xml.read_text().replace("<shortdesc", "<shortdescription", 1).replace(
        "</shortdesc>", "</shortdescription>", 1))
    assert run(["xmllint", "--noout", "--dtdvalid", DTD[0], str(bad)])[0] != 0


def _command(tmp_path):
    from tests.pacemaker.simpair import write_command
    return write_command(str(tmp_path / "xen-remus"))


def test_ocf_tester_passes_against_the_simulated_pair(tmp_path):
    need("ocf-tester", "xmllint")
    from tests.pacemaker import ocf_tester_run
    from tests.pacemaker.simpair import write_command
    d = tempfile.mkdtemp(prefix="pcmk-ocf-tester-")     # ocf-tester runs meta-data as nobody
    os.chmod(d, 0o755)
    try:
        agent = os.path.join(d, "remus")
        shutil.copy(AGENT, agent)
        os.chmod(agent, 0o755)
        rc, out, events, left = ocf_tester_run.run(agent, write_command(os.path.join(d, "xen-remus")))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert rc == 0 and "passed all tests" in out, out
    kinds = [e["kind"] for e in events if e["details"][:1] == [DOMAIN]]
    # promote booted the guest from its config, demote shut it down: twice each
    assert kinds.count("create") >= 2 and kinds.count("destroy") >= 2, kinds
    assert left == []


#: Pacemaker's compiled-in OCF directory, and the providers :func:`installed`
#: puts there (one per test process, named by its PID)
OCF_PROVIDERS = "/usr/lib/ocf/resource.d"
PROVIDER_PREFIX = "pcmk-test-"


def remove_dead_runs_providers(root=OCF_PROVIDERS):
    """Remove the providers :func:`installed` left behind in runs that died
    before their clean-up (SIGKILL, a timeout): those whose PID is gone.
    :returns: the names removed."""
    removed = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        pid = name[len(PROVIDER_PREFIX):]
        if name.startswith(PROVIDER_PREFIX) and pid.isdigit() and not pid_exists(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            removed.append(name)
    return removed


@pytest.fixture
def installed(tmp_path):
    """The agent under a provider of its own in Pacemaker's (compiled-in)
    OCF directory, for crm_resource; removed afterwards, whatever happened
    (and those of earlier runs that were killed, before)."""
    need("crm_resource")
    if os.geteuid() != 0:
        pytest.skip("installing an agent in /usr/lib/ocf/resource.d needs root")
    remove_dead_runs_providers()
    provider = "%s%d" % (PROVIDER_PREFIX, os.getpid())
    d = os.path.join(OCF_PROVIDERS, provider)
    try:
        if not os.path.isdir(d):
            os.makedirs(d)
        shutil.copy(AGENT, os.path.join(d, "remus"))
        os.chmod(os.path.join(d, "remus"), 0o755)
        yield provider
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_providers_of_killed_runs_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in ("%s%d" % (PROVIDER_PREFIX, dead.pid), "%s%d" % (PROVIDER_PREFIX, os.getpid()),
                 "%sx" % PROVIDER_PREFIX, "heartbeat"):
        os.makedirs(str(tmp_path / name))
        (tmp_path / name / "remus").write_text(u"agent")
    assert remove_dead_runs_providers(str(tmp_path)) == ["%s%d" % (PROVIDER_PREFIX, dead.pid)]
    assert sorted(os.listdir(str(tmp_path))) == sorted(["%s%d" % (PROVIDER_PREFIX, os.getpid()),
                                                        "%sx" % PROVIDER_PREFIX, "heartbeat"])


def test_crm_resource_validate(installed, tmp_path):
    env = dict(os.environ, XEN_REMUS_OCF_CMD=_command(tmp_path))
    base = ["crm_resource", "--validate", "--class", "ocf", "--provider", installed, "--agent", "remus"]
    rc, out = run(base + ["--option", "domain=vm1"], env=env)
    assert rc == 0 and "returned 0" in out, out
    rc, out = run(base + ["--option", "domain=a/b"], env=env)
    assert rc == decide.OCF_ERR_CONFIGURED and "letters, digits" in out, out
    rc, out = run(base + ["--option", "domain=vm1", "--option", "toolstack=sim"], env=env)
    assert rc == decide.OCF_ERR_CONFIGURED and "sim_agents" in out, out


def test_crm_resource_force_actions_drive_the_simulated_host(installed, pair):
    me = socket.gethostname()
    params = dict(pair.params(), sim_agents="%s=%s,B=%s" % (me, pair.A.cfg["agent"], pair.B.cfg["agent"]))
    path = cib.build(os.path.join(pair.root, "cib.xml"), params, nodes=(me, "B"), provider=installed)
    env = dict(pair.env(me), CIB_file=path)
    for k in list(env):
        if k.startswith("OCF_RESKEY"):
            del env[k]
    force = ["crm_resource", "-r", cib.RSC, "--force"]
    rc, out = run(force + ["--force-check"], env=env)
    assert rc == decide.OCF_NOT_RUNNING, out
    assert run(force + ["--force-start"], env=env)[0] == 0
    assert run(force + ["--force-check"], env=env)[0] == 0
    rc, out = run(force + ["--force-promote"], env=env)
    assert rc == 0, out
    assert pair.A.toolstack.sim_info(DOMAIN)["sim_state"] == "running"
    rc, out = run(force + ["--force-check"], env=env)
    assert rc == decide.OCF_DEGRADED_PROMOTED, out      # running, not protected
    assert run(force + ["--force-demote"], env=env)[0] == 0
    assert [d for d in pair.A.toolstack.list_domains() if d.domid] == []
    assert run(force + ["--force-stop"], env=env)[0] == 0
    assert run(force + ["--force-check"], env=env)[0] == decide.OCF_NOT_RUNNING


@pytest.fixture(scope="module")
def cibs(tmp_path_factory):
    """CIBs of the pair: both instances started and unpromoted; n1 promoted."""
    if not (_which("crm_simulate") and _which("cibadmin")):
        pytest.skip("crm_simulate / cibadmin not installed (pacemaker-cli-utils)")
    d = str(tmp_path_factory.mktemp("cib"))
    base = cib.build(os.path.join(d, "base.xml"), {"domain": "vm1"})
    started = os.path.join(d, "started.xml")
    rc, out = run(["crm_simulate", "-x", base, "-S", "--node-up", "n1", "--node-up", "n2", "-O", started])
    assert rc == 0, out
    s1 = cib.set_scores(started, os.path.join(d, "s1.xml"), {"n1": decide.SCORE_PRIMARY})
    promoted = os.path.join(d, "promoted.xml")
    rc, out = run(["crm_simulate", "-x", s1, "-S", "-O", promoted])
    assert rc == 0 and "Promote" in out, out
    return {"dir": d, "started": started, "promoted": promoted}


def simulate(cibs, src, scores, *extra):
    path = cib.set_scores(src, os.path.join(cibs["dir"], "run.xml"), scores)
    rc, out = run(["crm_simulate", "-x", path, "-S"] + list(extra))
    assert rc == 0, out
    return out


def test_without_scores_nobody_is_promoted(cibs):
    out = simulate(cibs, cibs["started"], {})
    assert "Promote" not in out and "Unpromoted: [ n1 n2 ]" in out


def test_the_higher_score_is_promoted(cibs):
    out = simulate(cibs, cibs["started"], {"n1": decide.SCORE_BACKUP, "n2": decide.SCORE_PRIMARY})
    assert "Promote    %s:1     ( Unpromoted -> Promoted n2 )" % cib.RSC in out, out


def test_primary_lost_backup_without_score_is_fenced_around_never_promoted(cibs):
    out = simulate(cibs, cibs["promoted"], {"n1": decide.SCORE_PRIMARY}, "--node-fail=n1")
    assert "Fence (reboot) n1" in out
    assert "Promote " not in out and "Unpromoted: [ n2 ]" in out, out


def test_primary_lost_scored_backup_is_promoted_after_the_fence(cibs):
    out = simulate(cibs, cibs["promoted"], {"n1": decide.SCORE_PRIMARY, "n2": decide.SCORE_BACKUP},
                   "--node-fail=n1")
    fence, promote = out.find("Fence (reboot) n1"), out.find("Promote ")
    assert 0 <= fence < promote, out
    assert "Promoted: [ n2 ]" in out


def test_a_zero_score_still_promotes_which_is_why_the_agent_deletes_it(cibs):
    out = simulate(cibs, cibs["promoted"], {"n1": decide.SCORE_PRIMARY, "n2": 0}, "--node-fail=n1")
    assert "Promoted: [ n2 ]" in out
