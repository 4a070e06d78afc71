"""``make test-xend``: scenarios on the real xend/xm of Xen 4.1.6.1 and 4.4.4.

Each scenario asserts real outcomes (records on the disk images, domains in
``xm list``, xend's own answers) and prints one verdict line; a failed
assertion prints ``FAIL`` with the reason and the run exits 1.  Each host's
xend.log is kept as ``build/test-xend/VERSION/HOST/xend.log``.
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lab  # noqa: E402
from lab import LabError, wait  # noqa: E402

DOM = "web1"


class ScenarioFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise ScenarioFailed(what)


def xm_domains(host):
    """``{name: state}`` from the real ``xm list``."""
    rc, out, err = host.xm("list", check=False)
    if rc != 0:
        raise ScenarioFailed("host %s: xm list failed: %s" % (host.name, err.strip()))
    doms = {}
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[0] != "Domain-0":
            doms[cols[0]] = cols[4]
    return doms


def guest_seed(host, name=DOM):
    st = host.hv("status")
    for d in st["domains"].values():
        if d["memory"] and d.get("name", name) == name:
            return d["memory"]["seed"]
    raise ScenarioFailed("host %s: no running guest memory for %s" % (host.name, name))


def lost_on(host, acked, seed):
    res = lab.records_missing(host.outside(host.image(DOM)), seed, acked)
    return res


def event_time(host, what, after=0.0, **match):
    for ev in host.hv("status")["events"]:
        if ev["what"] == what and ev["t"] >= after and all(ev.get(k) == v for k, v in match.items()):
            return ev["t"]
    return None


# ---- a: create, protect, kill A, B takes over ------------------------------------------

def scenario_a(L):
    A, B = L.hosts["A"], L.hosts["B"]
    L.make_image(DOM)
    cfg = L.write_cfg(DOM)
    A.xm("create", cfg)
    check(xm_domains(A).get(DOM), "xm create: %s not in A's xm list" % DOM)
    # remus-fu: the remus script on the primary, toward the backup's address
    A.spawn("remus", [L.bin("remus"), "-i", "100", "--no-net", DOM, lab.ADDRS["B"]], "/var/log/xen/remus.log")
    wait(lambda: DOM in xm_domains(B), "the Remus backup copy on B", timeout=30)
    wait(lambda: L.acked(DOM) > 200, "acknowledged writes under protection", timeout=30)
    check(xm_domains(B)[DOM].find("p") >= 0, "B's copy should stay paused while A runs, got %s"
          % xm_domains(B)[DOM])
    acked = A.hv("status")["acked"].get(DOM, 0)
    t_kill = time.time()
    A.kill()
    wait(lambda: xm_domains(B).get(DOM, "p").find("p") < 0, "B resuming the domain", timeout=60)
    t_run = event_time(B, "unpause", after=t_kill) or time.time()
    wait(lambda: B.hv("status")["acked"].get(DOM, 0) > acked + 50, "the guest writing on B", timeout=30)
    seed = guest_seed(B)
    res = lost_on(B, acked, seed)
    check(res["missing"] == 0, "B's disk lacks %d acknowledged records (first %s)" % (res["missing"],
                                                                                    res["first_missing"]))
    td = B.hv("status")["tapdisks"]
    check(any(t["remus"] == "unprotected" for t in td.values()), "B's tapdisk should have failed over: %s" % td)
    return "xend-failover %s: acknowledged %d, lost %d, B running after %.2f s" % (
        L.version, acked, res["missing"], t_run - t_kill)


SCENARIOS = [("a", scenario_a)]


def run_version(version, source, build_root, only=None):
    tag = "".join(version.split(".")[:2])
    L = lab.Lab(version, source, build_root, tag)
    failures = 0
    try:
        L.setup()
        L.start()
        for key, fn in SCENARIOS:
            if only and key not in only:
                continue
            t0 = time.time()
            try:
                line = fn(L)
                print("%s  (%.1f s)" % (line, time.time() - t0))
            except (ScenarioFailed, LabError) as exc:
                failures += 1
                print("FAIL xend-%s %s: %s" % (key, version, exc))
                L.log(traceback.format_exc())
                break
            sys.stdout.flush()
    finally:
        L.stop()
    return failures


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.path.join(lab.REPO, "build", "test-xend"))
    p.add_argument("--xen-src", default=os.environ.get("XEN_SRC") or None)
    p.add_argument("--version", action="append", help="only these Xen versions")
    p.add_argument("--only", action="append", help="only these scenarios (a-f)")
    args = p.parse_args(argv)
    sources = lab.find_sources(args.xen_src)
    if args.version:
        sources = [(v, s) for v, s in sources if v in args.version]
    if not sources:
        print("SKIP: test-xend: no Xen source (../shared/xen-src/xen-*-xend.tar.gz or XEN_SRC=DIR)")
        return 0
    failures = 0
    for version, source in sources:
        failures += run_version(version, source, args.build, args.only)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
