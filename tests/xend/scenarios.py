"""``make test-xend``: scenarios on the real xend/xm of Xen 4.1.6.1 and 4.4.4.

Each scenario asserts real outcomes (records on the disk images, domains in
``xm list``, xend's own answers) and prints one verdict line; a failed
assertion prints ``FAIL`` with the reason and the run exits 1.  Each host's
xend.log is kept as ``build/test-xend/VERSION/HOST/xend.log``.
"""
from __future__ import absolute_import, division, print_function

import argparse
import glob
import json
import os
import sys
import threading
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

def domid_of(host, name=DOM):
    rc, out, err = host.xm("domid", name, check=False)
    check(rc == 0 and out.strip().isdigit(), "host %s: xm domid %s: %s %s" % (host.name, name, out, err))
    return int(out.strip())


def xs_read(host, path):
    rc, out, err = host.run(["xenstore-read", path], check=False)
    return out.strip() if rc == 0 else None


def qemu_log(host, name=DOM):
    path = host.outside("/var/log/xen/qemu-dm-%s.log" % name)
    return open(path).read() if os.path.exists(path) else ""


def on_bridge(host, ifname, bridge="xenbr0"):
    rc, out, err = host.run(["ip", "-o", "link", "show", "master", bridge], check=False)
    return any(ln.split(":")[1].strip().split("@")[0] == ifname for ln in out.splitlines() if ":" in ln)


def net_buffer(host, vif):
    """What the remus script set up for ``vif``'s network buffer: the real
    ingress qdisc and mirred filter (tc, in the host's kernel) redirecting it
    to an ifb device, and the plug qdisc on that device (simulated: the lab's
    kernel has no sch_plug) buffered and released at checkpoints."""
    rc, out, err = host.run(["tc", "filter", "show", "dev", vif, "ingress"], check=False)
    ifb = [w for w in out.split() if w.startswith("ifb")]
    check(rc == 0 and "mirred" in out and ifb, "host %s: %s's ingress should be redirected to an ifb device: %s %s"
          % (host.name, vif, out, err))
    dev = ifb[0].rstrip(")")
    rc, out, err = host.run(["cat", "/sys/class/net/%s/ifindex" % dev], check=False)
    check(rc == 0 and out.strip().isdigit(), "host %s: no ifindex for %s" % (host.name, dev))
    counts = host.hv("status")["netbufs"].get(out.strip(), {})
    check(counts.get("add") == 1 and counts.get("buffer", 0) > 5 and counts.get("release", 0) > 5,
          "host %s: the plug qdisc on %s should be added once and buffered/released at checkpoints: %s"
          % (host.name, dev, counts))
    return "%s -> %s (tc ingress + mirred), plug on %s: %d buffered, %d released" % (
        vif, dev, dev, counts["buffer"], counts["release"])


def scenario_a(L):
    """remus-fu.txt's HVM guest: xm create on A, the remus script on A, A
    killed, B's copy resumes from the last checkpoint (memory, device model
    state and disk)."""
    A, B = L.hosts["A"], L.hosts["B"]
    L.make_image(DOM)
    cfg = L.write_hvm_cfg(DOM)
    A.xm("create", cfg)
    check(xm_domains(A).get(DOM), "xm create: %s not in A's xm list" % DOM)
    rc, sxp, _ = A.xm("list", "--long", DOM, check=False)
    check("(hvm" in sxp and "qemu-dm" in sxp, "xm create should have made an HVM domain with qemu-dm: %s"
          % sxp[:300])
    dom_a = domid_of(A)
    check(xs_read(A, "/local/domain/0/device-model/%d/state" % dom_a) == "running",
          "A's qemu-dm should report running in xenstore")
    check(on_bridge(A, "vif%d.0" % dom_a), "A: vif%d.0 should be on xenbr0 (vif-bridge)" % dom_a)
    # remus-fu: the remus script on the primary, toward the backup's address
    # with its network buffer: the vif's traffic redirected to an ifb device
    A.spawn("remus", [L.bin("remus"), "-i", "100", DOM, lab.ADDRS["B"]], "/var/log/xen/remus.log")
    wait(lambda: DOM in xm_domains(B), "the Remus backup copy on B", timeout=30)
    wait(lambda: L.acked(DOM) > 200, "acknowledged writes under protection", timeout=30)
    check(xm_domains(B)[DOM].find("p") >= 0, "B's copy should stay paused while A runs, got %s"
          % xm_domains(B)[DOM])
    check("logdirty enable" in qemu_log(A), "Remus should have switched A's qemu-dm to dirty logging")
    netbuf = net_buffer(A, "vif%d.0" % dom_a)
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
    # the device model resumed from a checkpoint's state: A's qemu-dm saved
    # it, the checkpointer sent it, xc_restore kept the last complete one
    dom_b = domid_of(B)
    loaded = [ln for ln in qemu_log(B).splitlines() if "loadvm" in ln]
    check(loaded and "saved on host A" in loaded[-1], "B's qemu-dm should have loaded A's device state: %s"
          % (loaded or qemu_log(B)[-500:]))
    save_no = int(loaded[-1].rsplit("save", 1)[1])
    restored = [ev for ev in B.hv("status")["events"] if ev["what"] == "restored" and ev["domid"] == dom_b]
    check(restored and save_no == restored[-1]["records"] > 1,
          "B's device state (save %d) should be that of the checkpoint its memory came from (%s)"
          % (save_no, restored and restored[-1]["records"]))
    check(xs_read(B, "/local/domain/0/device-model/%d/state" % dom_b) == "running",
          "B's qemu-dm should report running in xenstore")
    emu = [ln.split("ifname=", 1)[1].split(",")[0] for ln in qemu_log(B).splitlines()
           if "started:" in ln and "ifname=" in ln]
    check(emu, "B's qemu-dm should have been given its emulated NIC's tap device")
    for ifname in ("vif%d.0" % dom_b, emu[-1]):
        check(on_bridge(B, ifname), "B: %s should be on xenbr0" % ifname)
    return ("xend-failover %s: HVM (remus-fu cfg), acknowledged %d, lost %d, B running after %.2f s; "
            "qemu-dm on B loaded A's device state of checkpoint %d (that of its memory); vif%d.0 and %s "
            "on xenbr0; net buffer on A: %s") % (L.version, acked, res["missing"], t_run - t_kill, save_no, dom_b,
                                                emu[-1], netbuf)


# ---- b: xm remus-failback on B -----------------------------------------------------------

def failback_argv(L, *extra):
    return ["remus-failback", DOM, lab.ADDRS["A"], "--ssh", L.ssh, "--local-host", lab.ADDRS["B"],
            "--interval", "100", "--no-net"] + list(extra)


def identical(L, timeout=20):
    """Pause the domain on A, let Remus commit a checkpoint, compare both images byte for byte."""
    A, B = L.hosts["A"], L.hosts["B"]
    A.xm("pause", DOM)
    try:
        def same():
            with open(A.outside(A.image(DOM)), "rb") as fa, open(B.outside(B.image(DOM)), "rb") as fb:
                return fa.read() == fb.read()
        try:
            return wait(same, "B's copy equal to A's", timeout=timeout, step=0.3)
        except LabError:
            return False
    finally:
        A.xm("unpause", DOM)


# ---- c: the same without the hook: refused before anything moves -------------------------

def image_digest(host):
    import hashlib
    with open(host.outside(host.image(DOM)), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def scenario_c(L):
    A, B = L.hosts["A"], L.hosts["B"]
    check(DOM in xm_domains(B) and "p" not in xm_domains(B)[DOM], "scenario c needs a's state: %s running on B"
          % DOM)
    if A.holder is None:
        A.start(hook=True)
    # B's xend without our package (stock behaviour of the patched code) and without the tool
    B.restart_xend(hook=False, bare=True)
    check(DOM in xm_domains(B), "B's restarted xend should have found %s again" % DOM)
    rc, out, err = B.run([L.bin("xm"), "list", "--long", DOM], check=False)
    before_a = image_digest(A)
    rc, out, err = B.xm(*failback_argv(L), check=False, timeout=120)
    text = out + err
    check(rc != 0, "xm remus-failback without the hook should fail, got exit 0: %s" % text.strip()[-500:])
    check("hook-config install" in text and "refused" in text,
          "the refusal should say the running xend lacks the migrate hook: %s" % text.strip()[-800:])
    check(DOM in xm_domains(B) and "p" not in xm_domains(B)[DOM], "%s should still run on B" % DOM)
    check(DOM not in xm_domains(A), "nothing should have reached A: %s" % xm_domains(A))
    check(image_digest(A) == before_a, "A's disk changed although the failback was refused")
    why = [ln for ln in text.splitlines() if "hook-config install" in ln][0].strip()
    # the hook back (tool and package), for what follows
    B.restart_xend(hook=True)
    check(DOM in xm_domains(B), "B's xend should have found %s again" % DOM)
    return "xend-nohook %s: refused before anything moved (%s)" % (L.version, why[:150])


def failback_journal(host):
    paths = glob.glob(host.outside("/var/lib/xen-remus-ext/failback/%s*.json" % DOM))
    check(paths, "no failback journal on %s" % host.name)
    with open(paths[0]) as f:
        return json.load(f)


def scenario_b(L):
    A, B = L.hosts["A"], L.hosts["B"]
    check(DOM in xm_domains(B) and "p" not in xm_domains(B)[DOM], "scenario b needs a's state: %s running on B"
          % DOM)
    if A.holder is None:
        A.start(hook=True)     # A comes back with its stale disk
    check(DOM not in xm_domains(A), "A should come back without the domain")
    wait(lambda: B.hv("status")["acked"].get(DOM, 0) > 0, "the guest writing on B")
    t0 = time.time()
    rc, out, err = B.xm(*failback_argv(L), check=False, timeout=300)
    L.log("failback output:\n%s\n%s" % (out, err))
    check(rc == 0, "xm remus-failback exited %d: %s %s" % (rc, out.strip()[-800:], err.strip()[-800:]))
    took = time.time() - t0
    doms_a = xm_domains(A)
    check(DOM in doms_a and "p" not in doms_a[DOM], "after failback %s should run on A, got %s" % (DOM, doms_a))
    # Remus again, from A toward B: B holds the paused backup copy, A's tapdisk is protected
    wait(lambda: DOM in xm_domains(B) and "p" in xm_domains(B)[DOM], "the new Remus backup copy on B", timeout=30)
    wait(lambda: any(t["remus"] == "protected" for t in A.hv("status")["tapdisks"].values()),
         "A's remus tapdisk connected to B", timeout=30)
    before = L.acked(DOM)
    wait(lambda: L.acked(DOM) > before + 100, "acknowledged writes on A under protection", timeout=30)
    acked = L.acked(DOM)
    seed = guest_seed(A)
    res = lost_on(A, acked, seed)
    check(res["missing"] == 0, "A's disk lacks %d acknowledged records (first %s)" % (res["missing"],
                                                                                    res["first_missing"]))
    same = identical(L)
    check(same, "A's and B's images differ after a committed checkpoint")
    t_susp = None
    for ev in B.hv("status")["events"]:
        if ev["what"] == "shutdown" and ev.get("reason") == 2 and ev["t"] >= t0:
            t_susp = ev["t"]
    t_run = event_time(A, "unpause", after=t_susp or t0)
    check(t_susp is not None and t_run is not None, "no suspend on B / unpause on A in the hosts' events")
    # with xl on PATH next to the running xend, the toolstack is still xend
    rc, out, err = A.run([L.bin("xen-remus"), "status", DOM], check=False)
    check(rc == 0 and DOM in out, "xen-remus status on A (xl on PATH, xend running): exit %d %s %s"
          % (rc, out.strip(), err.strip()))
    # the final delta, sent by the hook in the suspend window: tracked by blktap2's log
    # driver where the stack carries it, else by reflink + FIEMAP where the images can
    rec = failback_journal(B)
    finals = [(d.get("tracker"), (d.get("final") or {}).get("mode")) for d in rec.get("disks", ())]
    check(rec.get("delta", {}).get("by") == "xend-hook", "the final delta should come from xend's hook at "
          "step 2, got %s" % rec.get("delta"))
    if L.disk_stack == "log":
        check(finals and all(f == ("blktap2-log", "tracked") for f in finals),
              "expected a final delta tracked by the log driver, got %s" % finals)
    elif A.images_fs == "xfs" and B.images_fs == "xfs":
        check(finals and all(f == ("fiemap", "tracked") for f in finals),
              "expected a tracked final delta (fiemap), got %s" % finals)
    L.log("trackers chosen: %s" % [(d.get("vdev"), d.get("tracker"), d.get("tracker_why"))
                                   for d in rec.get("disks", ())])
    # its transport was opened before the suspend: the hook only had the delta computed and sent
    check(all(d.get("prepared") for d in rec.get("disks", ())),
          "the final delta's connections should be open before the migration: %s"
          % [(d.get("vdev"), d.get("prepared")) for d in rec.get("disks", ())])
    with open(B.outside("/var/log/xen/remus-ext.log")) as f:
        handed = [ln for ln in f if "final disk delta sent by the failback process" in ln]
    check(handed, "the hook should have had the failback process send the delta over its prepared "
          "connections (B's remus-ext.log says nothing of it)")
    L.final_modes = finals
    L.failback_took = took
    return ("xend-failback %s: acknowledged %d, lost %d, identical %s, suspended %.2f s (final delta: %s, "
            "%.2f s on connections opened before the suspend)" % (
                L.version, acked, res["missing"], "yes" if same else "no", t_run - t_susp,
                ", ".join("%s/%s" % f for f in finals), rec["delta"].get("seconds") or 0.0))


# ---- d (part): xm remus-resync and xm remus-status on the real xm/xend -----------------------

def scenario_d(L):
    """After a (and c): web1 runs unprotected on B, A has its stale copy.
    ``xm remus-resync`` brings A's copy up to date live; ``xm remus-status``
    reports the domain.  (--reverse-only, --abort and --resume after a kill
    are exercised on the simulator's hosts, not yet here.)"""
    A, B = L.hosts["A"], L.hosts["B"]
    if A.holder is None:
        A.start(hook=True)
    check(DOM in xm_domains(B) and DOM not in xm_domains(A), "scenario d needs web1 on B only")
    # c's refused failback is journaled in the terminal state refused, with its reason;
    # there is nothing to resume (b starts afresh)
    rec = failback_journal(B)
    check(rec["state"] == "refused" and rec.get("error"), "c's refused failback should be journaled as refused: "
          "%s" % rec["state"])
    rc, text = remus_failback(L, "B", "A", "--resume")
    check(rc != 0 and "nothing to resume" in text and failback_journal(B)["state"] == "refused"
          and DOM in xm_domains(B), "xm remus-failback --resume of the refused failback: exit %d %s" % (rc, text))
    acked = L.acked(DOM)
    seed = guest_seed(B)
    before = lost_on(A, acked, seed)["missing"]
    rc, out, err = B.xm("remus-resync", DOM, lab.ADDRS["A"], "--ssh", L.ssh, check=False, timeout=180)
    check(rc == 0, "xm remus-resync exited %d: %s %s" % (rc, out.strip()[-500:], err.strip()[-500:]))
    after = lost_on(A, acked, seed)
    check(after["missing"] == 0, "A's copy lacks %d of the %d records acknowledged before the resync"
          % (after["missing"], acked))
    rc, st, err = B.xm("remus-status", DOM, check=False)
    check(rc == 0 and DOM in st, "xm remus-status %s exited %d: %s %s" % (DOM, rc, st, err))
    return "xend-resync %s: A's copy lacked %d of %d acknowledged records, after xm remus-resync 0; " \
        "xm remus-status: %s" % (L.version, before, acked, " ".join(st.split())[:100])


def tapctl_lines(host, since_line=0):
    path = host.outside("/var/log/xen/tap-ctl.log")
    return open(path).read().splitlines()[since_line:] if os.path.exists(path) else []


def images_equal_paused(L, where, timeout=20):
    """Pause the domain on ``where`` (the Remus primary), let a checkpoint
    commit, compare both hosts' images byte for byte, unpause."""
    A, B = L.hosts["A"], L.hosts["B"]
    prim = L.hosts[where]
    prim.xm("pause", DOM)
    try:
        def same():
            return digest(A.outside(A.image(DOM))) == digest(B.outside(B.image(DOM)))
        try:
            return wait(same, "both images equal", timeout=timeout, step=0.3)
        except LabError:
            return False
    finally:
        prim.xm("unpause", DOM)


def failover(L, dead, survivor):
    """Power ``dead`` (the Remus primary) off; the survivor's copy resumes
    from the last checkpoint; ``dead`` comes back without the domain."""
    D, S = L.hosts[dead], L.hosts[survivor]
    check(DOM in xm_domains(D) and "p" in xm_domains(S).get(DOM, ""), "failover %s -> %s needs the domain on %s "
          "and its paused backup on %s" % (dead, survivor, dead, survivor))
    acked = L.acked(DOM)
    D.kill()
    wait(lambda: "p" not in xm_domains(S).get(DOM, "p"), "%s resuming the domain" % survivor, timeout=60)
    wait(lambda: S.hv("status")["acked"].get(DOM, 0) > acked + 20, "the guest writing on %s" % survivor,
         timeout=30)
    check(lost_on(S, acked, guest_seed(S))["missing"] == 0, "%s lost acknowledged writes at failover" % survivor)
    D.start(hook=True)
    check(DOM not in xm_domains(D), "%s should come back without the domain" % dead)


def remus_failback(L, on, home, *extra, **kw):
    """``xm remus-failback web1 HOME`` on host ``on`` (the lab's options)."""
    H = L.hosts[on]
    argv = ["remus-failback", DOM, lab.ADDRS[home], "--ssh", L.ssh, "--local-host", lab.ADDRS[on],
            "--interval", "100", "--no-net"] + list(extra)
    if kw.get("spawn"):
        return H.spawn("failback", [L.bin("xm")] + argv, "/var/log/xen/failback.out")
    rc, out, err = H.xm(*argv, check=False, timeout=240)
    L.log("xm %s on %s:\n%s\n%s" % (" ".join(argv[:4] + list(extra)), on, out, err))
    return rc, out + err


def scenario_d_reverse(L):
    """After f (web1 on A, protected toward B): A dies, B takes over; then
    ``xm remus-failback web1 A --reverse-only`` on B: the domain stays on B,
    A's copy is brought up to date and Remus protects B toward A.  B's
    failed-over tapdisk serves ``remus:B:9000`` (its own address): the run
    re-points it at A with ``tap-ctl pause`` and ``tap-ctl unpause -a``
    (through the strict tap-ctl)."""
    A, B = L.hosts["A"], L.hosts["B"]
    failover(L, "A", "B")
    mark = len(tapctl_lines(B))
    rc, text = remus_failback(L, "B", "A", "--reverse-only")
    check(rc == 0, "xm remus-failback --reverse-only exited %d: %s" % (rc, text.strip()[-800:]))
    rec = failback_journal(B)
    check(rec["mode"] == "reverse" and rec["state"] == "done" and not rec.get("step"),
          "the journal should say reverse done, got %s/%s step %s" % (rec["mode"], rec["state"], rec.get("step")))
    doms_b = xm_domains(B)
    check(DOM in doms_b and "p" not in doms_b[DOM], "web1 should still run on B: %s" % doms_b)
    wait(lambda: "p" in xm_domains(A).get(DOM, ""), "the Remus backup copy on A, paused", timeout=30)
    calls = tapctl_lines(B, mark)
    paused = [c for c in calls if c.split()[1:2] == ["pause"]]
    unpaused = [c for c in calls if c.split()[1:2] == ["unpause"] and "-a" in c.split()]
    new_stack = L.remus_uname(DOM, backup="A").split(":", 1)[1]      # the lab's stack, toward A
    check(paused and unpaused and unpaused[-1].split()[-1] == new_stack,
          "B's tapdisk should have been re-pointed by tap-ctl pause / unpause -a %s, got %s"
          % (new_stack, calls))
    wait(lambda: any(t["stack"] == new_stack and t["remus"] == "protected"
                     for t in B.hv("status")["tapdisks"].values()),
         "B's tapdisk protected toward A", timeout=30)
    before = L.acked(DOM)
    wait(lambda: L.acked(DOM) > before + 100, "acknowledged writes on B under protection", timeout=30)
    acked = L.acked(DOM)
    res = lost_on(A, acked, guest_seed(B))
    check(res["missing"] == 0, "A's copy lacks %d of the %d acknowledged records (first %s)"
          % (res["missing"], acked, res["first_missing"]))
    check(images_equal_paused(L, "B"), "A's and B's images differ after a committed checkpoint")
    return ("xend-reverse-only %s: A failed, B took over; tap-ctl pause + unpause -a %s on B, Remus B -> A, "
            "acknowledged %d, lost 0 on A, identical yes") % (L.version, new_stack.split("|")[0], acked)


def kill_mid_migration(L, on):
    """Start ``xm remus-failback`` on ``on`` and SIGKILL it (its process
    group) once the real xend there is migrating the domain (its xc_save
    runs); xend carries on.  :returns: the journal's step when killed."""
    H = L.hosts[on]
    log = H.outside("/var/log/xen/xend.log")
    mark = os.path.getsize(log)
    home = "B" if on == "A" else "A"
    proc = remus_failback(L, on, home, spawn=True)

    def migrating():
        if proc.poll() is not None:
            raise ScenarioFailed("the failback ended (exit %s) before the migration could be caught"
                                 % proc.returncode)
        with open(log) as f:
            f.seek(mark)
            return "[xc_save]" in f.read()
    wait(migrating, "xend on %s migrating the domain" % on, timeout=120, step=0.05)
    step = (failback_journal(H) or {}).get("step")
    os.killpg(proc.pid, 9)
    proc.wait(10)
    H.procs.pop("failback", None)
    return step


def scenario_d_resume(L):
    """B dies, A takes over; ``xm remus-failback web1 B`` on A is SIGKILLed
    while A's xend migrates the domain; ``--resume`` completes it: the
    domain runs on B, protected toward A, no acknowledged write lost, both
    images identical."""
    A, B = L.hosts["A"], L.hosts["B"]
    failover(L, "B", "A")
    step = kill_mid_migration(L, "A")
    check(step == "migrate", "the failback should have been killed in its migrate step, got %s" % step)
    rc, text = remus_failback(L, "A", "B", "--resume")
    check(rc == 0, "xm remus-failback --resume exited %d: %s" % (rc, text.strip()[-800:]))
    rec = failback_journal(A)
    check(rec["state"] == "done" and not rec.get("step"), "journal after --resume: %s step %s"
          % (rec["state"], rec.get("step")))
    doms_b = xm_domains(B)
    check(DOM in doms_b and "p" not in doms_b[DOM], "web1 should run on B after --resume: %s" % doms_b)
    wait(lambda: "p" in xm_domains(A).get(DOM, ""), "the Remus backup copy on A, paused", timeout=30)
    before = L.acked(DOM)
    wait(lambda: L.acked(DOM) > before + 100, "acknowledged writes on B under protection", timeout=30)
    acked = L.acked(DOM)
    res = lost_on(B, acked, guest_seed(B))
    check(res["missing"] == 0, "B's disk lacks %d acknowledged records (first %s)" % (res["missing"],
                                                                                    res["first_missing"]))
    check(images_equal_paused(L, "B"), "A's and B's images differ after a committed checkpoint")
    return ("xend-failback-resume %s: killed in step %s while xend migrated; --resume: web1 on B, Remus B -> A, "
            "acknowledged %d, lost 0, identical yes, journal done") % (L.version, step, acked)


def scenario_d_abort(L):
    """B dies again, A takes over; the failback to B is SIGKILLed while A's
    xend migrates; ``--abort`` leaves the safe state the real xend allows:
    the migration ran to its end in xend (its hook sent the final delta), so
    the domain is home on B, running, unprotected, every acknowledged write
    on B's disk, both images identical; its remus tapdisk (primary, toward
    A) holds the guest's new writes until a backup connects, and the abort
    says so.  ``xen-remus protect`` on B, as it advises, then protects it."""
    A, B = L.hosts["A"], L.hosts["B"]
    failover(L, "B", "A")
    acked_before = L.acked(DOM)
    step = kill_mid_migration(L, "A")
    check(step == "migrate", "the failback should have been killed in its migrate step, got %s" % step)
    rc, text = remus_failback(L, "A", "B", "--abort")
    check(rc == 0, "xm remus-failback --abort exited %d: %s" % (rc, text.strip()[-800:]))
    rec = failback_journal(A)
    check(rec["state"] == "aborted" and not rec.get("step"), "journal after --abort: %s step %s"
          % (rec["state"], rec.get("step")))
    doms_a, doms_b = xm_domains(A), xm_domains(B)
    check(DOM not in doms_a and DOM in doms_b and "p" not in doms_b[DOM],
          "after --abort web1 should run on B only: A %s, B %s" % (doms_a, doms_b))
    check("hold its new writes" in text and "xen-remus protect" in text,
          "--abort should say the remus disks hold the writes: %s" % text.strip()[-600:])
    acked = L.acked(DOM)
    check(acked >= acked_before, "acknowledged writes went backwards")
    res = lost_on(B, acked, guest_seed(B))
    check(res["missing"] == 0, "B's disk lacks %d acknowledged records (first %s)" % (res["missing"],
                                                                                    res["first_missing"]))
    check(digest(A.outside(A.image(DOM))) == digest(B.outside(B.image(DOM))),
          "A's and B's images should be identical (the final delta went, the guest's writes are held)")
    tds = B.hv("status")["tapdisks"]
    check(any(t["remus"] == "connecting" for t in tds.values()), "B's remus tapdisk should wait for its backup: %s"
          % tds)
    time.sleep(1.0)
    check(L.acked(DOM) == acked, "no write should complete while the remus disk waits for its backup")
    # as the abort advises: protect it from B (with a held backup on A: scenario h goes on from here)
    rc, out, err = B.run([L.bin("xen-remus"), "protect", DOM, lab.ADDRS["A"], "--ssh", L.ssh, "--local-host",
                          lab.ADDRS["B"], "--interval", "100", "--no-net", "--hold-backup"],
                         check=False, timeout=240)
    L.log("protect after abort:\n%s\n%s" % (out, err))
    check(rc == 0, "xen-remus protect after the abort exited %d: %s %s" % (rc, out.strip()[-600:], err.strip()[-600:]))
    wait(lambda: L.acked(DOM) > acked + 100, "acknowledged writes on B under protection", timeout=60)
    check(images_equal_paused(L, "B"), "A's and B's images differ after protect and a committed checkpoint")
    return ("xend-failback-abort %s: killed in step %s while xend migrated; --abort: web1 home on B, running, "
            "unprotected, lost 0, images identical, writes held by its remus disk; journal aborted; "
            "xen-remus protect --hold-backup then: Remus B -> A, identical yes") % (L.version, step)


# ---- h: a held backup waits for promote ------------------------------------------------------

HOLD_SECONDS = 8.0


def status_row(L, host, name=DOM):
    rc, out, err = host.run([L.bin("xen-remus"), "status", "--json", name], check=False)
    check(rc == 0, "host %s: xen-remus status --json %s: exit %d %s %s" % (host.name, name, rc, out, err))
    rows = [r for r in json.loads(out).get("domains", ()) if r.get("name") == name]
    check(rows, "host %s: xen-remus status has no row for %s: %s" % (host.name, name, out[:300]))
    return rows[0]


def hold_record(host, name=DOM):
    path = host.outside("/var/lib/xen-remus-ext/hold/%s.xend.json" % name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def scenario_h(L):
    """After d (web1 on B, ``xen-remus protect --hold-backup`` toward A):
    B dies.  A's copy, restored from a marked stream by the patched xend,
    stays paused at its last committed checkpoint: no unpause, no byte
    written to A's disk, its generation unchanged, for HOLD_SECONDS.  Then
    ``xen-remus hold release web1`` on A runs it, with no acknowledged write
    lost.  B comes back; ``xm remus-failback web1 B --hold-backup`` on A: its
    plain migration to B is not held (web1 runs on B), and its Remus B -> A
    is held again (A's new copy recorded as receiving)."""
    A, B = L.hosts["A"], L.hosts["B"]
    if A.holder is None:            # run alone after a (--only a --only h): protect B -> A here
        A.start(hook=True)
    if DOM not in xm_domains(A):
        rc, out, err = B.run([L.bin("xen-remus"), "protect", DOM, lab.ADDRS["A"], "--ssh", L.ssh, "--local-host",
                              lab.ADDRS["B"], "--interval", "100", "--no-net", "--hold-backup", "--discard-peer"],
                             check=False, timeout=240)
        check(rc == 0, "xen-remus protect --hold-backup exited %d: %s %s" % (rc, out.strip()[-600:],
                                                                             err.strip()[-600:]))
    before = L.acked(DOM)
    wait(lambda: L.acked(DOM) > before + 100, "acknowledged writes on B under protection", timeout=60)
    doms_a = xm_domains(A)
    check(DOM in xm_domains(B) and "p" in doms_a.get(DOM, ""), "scenario h needs web1 on B and its backup on A")
    rec = hold_record(A)
    dom_a = domid_of(A)
    check(rec and rec["state"] == "receiving" and rec["domid"] == dom_a,
          "A's xend should have recorded its copy (domain %d) as a held stream's, receiving: %s" % (dom_a, rec))
    row = status_row(L, A)
    check((row.get("backup") or {}).get("state") == "receiving",
          "xen-remus status on A should report web1 as a backup receiving: %s" % row.get("backup"))
    gens = [(d.get("vdev"), d.get("generation")) for d in row.get("disks") or ()]
    acked = L.acked(DOM)
    t_kill = time.time()
    B.kill()
    wait(lambda: (hold_record(A) or {}).get("state") == "held", "A's xend to hold its copy after the stream "
         "ended", timeout=60)
    t_held = time.time()
    first = digest(A.outside(A.image(DOM)))
    samples = 0
    while time.time() - t_held < HOLD_SECONDS:
        st = xm_domains(A).get(DOM, "")
        check("p" in st, "A's held copy should stay paused, got state %r %.1f s after the hold"
              % (st, time.time() - t_held))
        check(digest(A.outside(A.image(DOM))) == first, "A's disk changed while its copy was held")
        samples += 1
        time.sleep(0.5)
    check(event_time(A, "unpause", after=t_kill, domid=dom_a) is None, "A's hypervisor unpaused the held copy")
    row = status_row(L, A)
    check((row.get("backup") or {}).get("state") == "broken" and row["backup"].get("held"),
          "xen-remus status on A should report the copy held (broken stream): %s" % row.get("backup"))
    gens_held = [(d.get("vdev"), d.get("generation")) for d in row.get("disks") or ()]
    check(gens_held == gens, "A's disk generations changed while held: %s -> %s" % (gens, gens_held))
    rc, out, err = A.run([L.bin("xen-remus"), "hold", "show", DOM], check=False)
    check(rc == 0 and json.loads(out).get("state") == "held", "xen-remus hold show on A: %d %s %s" % (rc, out, err))
    held_for = time.time() - t_held
    rc, out, err = A.run([L.bin("xen-remus"), "hold", "release", DOM], check=False, timeout=60)
    check(rc == 0, "xen-remus hold release on A: exit %d %s %s" % (rc, out, err))
    check("p" not in xm_domains(A).get(DOM, "p"), "web1 should run on A after the release: %s" % xm_domains(A))
    wait(lambda: A.hv("status")["acked"].get(DOM, 0) > acked + 50, "the guest writing on A", timeout=30)
    res = lost_on(A, acked, guest_seed(A))
    check(res["missing"] == 0, "A's disk lacks %d acknowledged records (first %s)" % (res["missing"],
                                                                                    res["first_missing"]))
    check((hold_record(A) or {}).get("state") == "released", "A's record should say released: %s" % hold_record(A))
    # B back: the failback's plain migration to B is not held; its Remus B -> A is held again
    B.start(hook=True)
    check(DOM not in xm_domains(B), "B should come back without the domain")
    t0 = time.time()
    rc, text = remus_failback(L, "A", "B", "--hold-backup")
    check(rc == 0, "xm remus-failback --hold-backup exited %d: %s" % (rc, text.strip()[-800:]))
    doms_b = xm_domains(B)
    check(DOM in doms_b and "p" not in doms_b[DOM], "the failback's migration to B should not be held: %s" % doms_b)
    check(hold_record(B) is None, "B's xend recorded a hold for a plain migration: %s" % hold_record(B))
    with open(B.outside("/var/log/xen/xend.log")) as f:
        check("asks for a hold" not in f.read(), "B's xend held a plain migration (xend.log)")
    wait(lambda: (hold_record(A) or {}).get("state") == "receiving" and
         hold_record(A)["domid"] == domid_of(A), "A's new backup copy recorded as a held stream's", timeout=30)
    return ("xend-hold %s: B killed; A's copy held paused %.1f s (%d looks: state p, disk unchanged, no unpause, "
            "generation unchanged), hold release: acknowledged %d, lost %d; failback to B --hold-backup: its "
            "migration not held (running on B), Remus B -> A held again (%.1f s)") % (
                L.version, held_for, samples, acked, res["missing"], time.time() - t0)


# ---- e: a failback leaves no tapdisk behind ------------------------------------------------

def vbd_minors(host):
    """Minors of the blktap2 devices B's vbd backends use (xenstore, through xenstore-ls)."""
    rc, out, err = host.run(["xenstore-ls", "-f", "/local/domain/0/backend/vbd"], check=False)
    minors = set()
    for line in out.splitlines():
        if "/params = " in line and "/dev/xen/blktap-2/tapdev" in line:
            minors.add(int(line.split("tapdev", 1)[1].strip().strip('"')))
    return minors


def scenario_e(L):
    """After b: each host runs exactly the tapdisks its domains use.  B's old
    tapdisk (the failed-over copy that migrated to A) must be destroyed: on
    4.1 stock xend's TapdiskController.list cannot parse a remus disk's
    ``args=remus:HOST:PORT`` and the destroy fails."""
    out = []
    for host in (L.hosts["A"], L.hosts["B"]):
        tds = host.hv("status")["tapdisks"]
        used = vbd_minors(host)
        have = set(int(m) for m in tds)
        check(have == used, "host %s: tapdisks %s, but its vbds use %s: %s left behind (%s)"
              % (host.name, sorted(have), sorted(used), sorted(have - used),
                 dict((m, tds[str(m)]["stack"]) for m in sorted(have - used))))
        destroys = [ln for ln in open(host.outside("/var/log/xen/tap-ctl.log")) if " destroy " in ln]
        out.append("%s %d tapdisk(s), %d destroyed" % (host.name, len(have), len(destroys)))
    rc, log_b, _ = L.hosts["B"].run(["grep", "-c", "too many values to unpack", "/var/log/xen/xend.log"],
                                    check=False)
    check(log_b.strip() in ("", "0"), "B's xend.log: TapdiskController.list failed %s time(s)" % log_b.strip())
    return "xend-no-tapdisk-left %s: %s" % (L.version, ", ".join(out))


# ---- f: a migration the destination refuses ------------------------------------------------

def scenario_f(L):
    """A domain of the same name already runs on the destination.  Real xend's
    destination refuses the incoming domain; the failback must refuse before
    anything moves, and never lose the domain."""
    A, B = L.hosts["A"], L.hosts["B"]
    if A.holder is None:
        A.start(hook=True)
    name = "web2"
    for h in (A, B):
        with open(h.outside(h.image(name)), "wb") as f:
            f.truncate(lab.IMAGE_SIZE)
    L.write_cfg(name, "tap2:aio:/var/lib/xen/images/%s.img" % name)
    A.xm("create", "/var/lib/xen/%s.cfg" % name)        # another guest that happens to have the name
    with open(B.outside("/var/lib/xen/%s.cfg" % name), "w") as f:
        f.write("name = %r\nkernel = '/var/lib/xen/boot/vmlinuz-lab'\nmemory = 64\nvcpus = 1\n"
                "disk = ['tap2:remus:%s:9001|aio:/var/lib/xen/images/%s.img,xvda,w']\n"
                % (name, lab.ADDRS["B"], name))
    B.xm("create", "/var/lib/xen/%s.cfg" % name)
    A.xm("pause", name)       # A's own guest quiet: its disk must not change
    time.sleep(0.2)
    before_a = digest(A.outside(A.image(name)))
    argv = ["remus-failback", name, lab.ADDRS["A"], "--ssh", L.ssh, "--local-host", lab.ADDRS["B"], "--no-net"]
    rc, out, err = B.xm(*argv, check=False, timeout=120)
    text = out + err
    check(rc != 0, "failback onto a host running a domain of that name should be refused, got exit 0: %s"
          % text.strip()[-500:])
    check(name in xm_domains(B) and name in xm_domains(A), "both %s should still run: A %s, B %s"
          % (name, xm_domains(A), xm_domains(B)))
    check(digest(A.outside(A.image(name))) == before_a, "A's %s disk changed" % name)
    why = [ln for ln in text.splitlines() if ln.startswith("xen-remus:")][-1].strip()
    A.xm("unpause", name)
    # what stock `xm migrate` does in the same situation (real xend on both ends)
    rc, out, err = B.xm("migrate", "--live", name, lab.ADDRS["A"], check=False, timeout=120)
    on_b = name in xm_domains(B)
    L.log("xm migrate onto a same-named domain: exit %d, still on B: %s; %s %s" % (rc, on_b, out, err))
    return "xend-refused-migration %s: failback refused up front (%s); plain xm migrate exit %d, domain %s" % (
        L.version, why[:120], rc, "kept on B" if on_b else "DESTROYED on B")


def digest(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


SCENARIOS = [("a", scenario_a), ("c", scenario_c), ("d", scenario_d), ("b", scenario_b), ("e", scenario_e),
             ("f", scenario_f), ("d", scenario_d_reverse), ("d", scenario_d_resume), ("d", scenario_d_abort),
             ("h", scenario_h)]


def run_version(version, source, build_root, only=None, disk_stack="log"):
    tag = "".join(version.split(".")[:2])
    L = lab.Lab(version, source, build_root, tag, disk_stack=disk_stack)
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
    p.add_argument("--disk-stack", choices=("log", "plain"), default="log",
                   help="web1's disk: remus|log|aio (default; the log driver tracks the failback's "
                        "writes) or remus|aio (reflink + FIEMAP on the lab's XFS images)")
    p.add_argument("--serial", action="store_true", help="one Xen version after the other (default: side by side)")
    args = p.parse_args(argv)
    sources = lab.find_sources(args.xen_src)
    if args.version:
        sources = [(v, s) for v, s in sources if v in args.version]
    if not sources:
        print("SKIP: test-xend: no Xen source (../shared/xen-src/xen-*-xend.tar.gz or XEN_SRC=DIR)")
        return 0
    if args.serial or len(sources) == 1:
        failures = sum(run_version(version, source, args.build, args.only, args.disk_stack)
                       for version, source in sources)
        return 1 if failures else 0
    # the versions' labs share nothing (their own namespaces, build trees and
    # daemons): run them side by side
    results = {}

    def one(version, source):
        try:
            results[version] = run_version(version, source, args.build, args.only, args.disk_stack)
        except Exception:  # a thread's boundary: report it as that version's failure
            print("FAIL xend %s: %s" % (version, traceback.format_exc().strip().splitlines()[-1]))
            results[version] = 1
    threads = [threading.Thread(target=one, args=vs) for vs in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 1 if any(results.get(v, 1) for v, _ in sources) else 0


if __name__ == "__main__":
    sys.exit(main())
