#!/usr/bin/env python3
"""Benchmark of a resumed ``xen-remus resync --mode full``: what re-verifying
the finished ranges costs, against its peers measured in the same run.

Makes a random source image (``--size``, default 256M) and a blank target,
then leaves the target as a run killed half-way leaves it: the first half
(``--done``) written and fsync'd, the target marked inconsistent, the
receiver's journal naming that half.  Then ``--changed`` (default 1M) of the
source inside that finished half is rewritten (the domain ran on), and each
row starts again from that state:

- dd: a plain full copy (conv=fdatasync), local: the floor of any full copy;
- fresh full: ``--no-resume``, over TCP (TLS) on 127.0.0.1;
- resumed full: the same command resuming, over TCP: the finished half is
  compared by digests, the changed MiB and the other half are sent;
- the same two locally.

Every row is checked with ``cmp``.  Prints seconds, wire bytes and the
ratios of the resumed run to the fresh one.
Usage: ``bench/resume.py [--size 256M] [--done 0.5] [--changed 1M] [--repeat N] [--dir DIR] [--keep]``
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from resync import cmp_ok, drop_caches, make_random, start_receiver, stop, timed  # noqa: E402

from xen_remus_ext.resync.plan import parse_size  # noqa: E402

MiB = 1 << 20


def log(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


def interrupted_state(src, dst, size, done, changed_at, changed, env):
    """``dst`` as a full run killed after ``done`` bytes leaves it, then the
    source written inside that finished part."""
    with open(dst, "wb") as f:
        f.truncate(size)
    subprocess.check_call(["dd", "if=" + src, "of=" + dst, "bs=1M", "count=%d" % (done // MiB), "conv=notrunc",
                           "status=none"])
    code = ("import sys; from xen_remus_ext.resync import journal, meta\n"
            "src, dst, size, done = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
            "m = meta.ensure(src, size)\n"
            "meta.mark_inconsistent(dst, size)\n"
            "journal.Journal(dst, size, m.current, 'full', 65536, done=[(0, done)]).save()\n")
    subprocess.check_call([sys.executable, "-c", code, src, dst, str(size), str(done)], env=env)
    with open(src, "r+b") as f:
        f.seek(changed_at)
        f.write(os.urandom(changed))


def ours(src, dest, extra, env):
    argv = [sys.executable, "-m", "xen_remus_ext", "resync", src, dest, "--mode", "full", "--json",
            "--no-progress"] + extra
    sec, rc, out, err, _ = timed(argv, env=env)
    if rc != 0:
        raise SystemExit("bench: ours failed: %s" % err.decode("utf-8", "replace"))
    return sec, json.loads(out.decode("utf-8").splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--done", type=float, default=0.5, help="fraction the interrupted run had finished")
    ap.add_argument("--changed", default="1M", help="source bytes rewritten inside the finished part")
    ap.add_argument("--repeat", type=int, default=1, help="runs per row; the fastest is reported")
    ap.add_argument("--dir", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    size -= size % MiB
    done = int(size * args.done) // MiB * MiB
    changed = parse_size(args.changed)
    d = args.dir or tempfile.mkdtemp(prefix="xre-bench-resume-", dir="/var/tmp")
    env = dict(os.environ, XEN_REMUS_STATE_DIR=os.path.join(d, "state"), XEN_REMUS_LOG="",
               PYTHONPATH=TOP + os.pathsep + os.environ.get("PYTHONPATH", ""))
    src, dst = os.path.join(d, "src.img"), os.path.join(d, "dst.img")
    key = os.path.join(d, "key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)
    make_random(src, size)
    pristine = os.path.join(d, "src.orig")
    shutil.copyfile(src, pristine)
    rows = []

    def setup():
        shutil.rmtree(env["XEN_REMUS_STATE_DIR"], ignore_errors=True)
        shutil.copyfile(pristine, src)
        interrupted_state(src, dst, size, done, done // 2, changed, env)
        drop_caches()

    def row(name, fn):
        best = None
        for _ in range(args.repeat):
            setup()
            sec, res = fn()
            if best is None or sec < best[1]:
                best = (name, sec, res)
        name, sec, res = best
        ok = cmp_ok(src, dst)
        rows.append((name, sec, res, ok))
        log("%-22s %7.2f s  wire %s  resumed %s  resent %s  %s"
            % (name, sec, res.get("bytes_sent"), res.get("resumed"), res.get("resent"),
               "identical" if ok else "DIFFER"))

    def dd():
        sec, rc, _, err, _ = timed(["dd", "if=" + src, "of=" + dst, "bs=1M", "conv=fdatasync,notrunc",
                                    "status=none"])
        if rc != 0:
            raise SystemExit("bench: dd failed: %s" % err.decode("utf-8", "replace"))
        return sec, {}

    with open(dst, "wb") as f:
        f.truncate(size)
    recv, port = start_receiver(env, key, {"d": dst})
    url = "tcp://127.0.0.1:%d/d" % port
    try:
        row("dd full copy (local)", dd)
        row("fresh full tcp", lambda: ours(src, url, ["--key", key, "--no-resume"], env))
        row("resumed full tcp", lambda: ours(src, url, ["--key", key], env))
        row("fresh full local", lambda: ours(src, dst, ["--no-resume"], env))
        row("resumed full local", lambda: ours(src, dst, [], env))
    finally:
        stop(recv)
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    by = dict((r[0], r) for r in rows)
    print("%d MiB image; the interrupted run had finished %d MiB; %d bytes of the source rewritten inside it"
          % (size // MiB, done // MiB, changed))
    print("| run | seconds | wire bytes | resumed | resent | identical |")
    print("|---|---|---|---|---|---|")
    for name, sec, res, ok in rows:
        print("| %s | %.2f | %s | %s | %s | %s |" % (name, sec, "{:,}".format(res["bytes_sent"]) if res else "-",
                                                 res.get("resumed", "-"), res.get("resent", "-"),
                                                 "yes" if ok else "NO"))
    for where in ("tcp", "local"):
        f, r = by["fresh full " + where], by["resumed full " + where]
        print("resumed/fresh %s: wire %.3f, time %.2f" % (where, r[2]["bytes_sent"] / f[2]["bytes_sent"],
                                                          r[1] / f[1]))
    print("resumed tcp / dd: time %.2f" % (by["resumed full tcp"][1] / by["dd full copy (local)"][1]))
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
