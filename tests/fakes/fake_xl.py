#!/usr/bin/env python
"""A STRICT fake ``xl`` (stands in for xl 4.5-4.13, which needs a hypervisor).

Run as ``fake_xl.py ARGS...`` (tests put it first in an argv prefix).
Environment:

* ``FAKE_XL_STATE``: JSON state of this host (start from tests/data/xl/state.json):
  domains, ``next_domid``, ``hosts`` (migration target name -> that host's
  state file), ``remus`` (domain -> argv of the running ``xl remus``);
* ``FAKE_XL_DATA``: the golden directory (default: tests/data/xl next to us);
* ``FAKE_XL_LOG``: if set, every argv is appended to it as one JSON line.

Only the argv shapes our adapter sends are accepted (``list [-l] [DOM]``,
``info``, ``pause|unpause|destroy DOM``, ``save [-c] DOM FILE``,
``restore [-p] FILE``, ``migrate [-s SSH] [-p] [-C CFG] DOM HOST``,
``remus [-i MS] [-n] [-d] [-b] [-F] [-u] [-s SSH] DOM HOST``); anything else
exits 1 with "fake xl: unexpected argv".  Output follows xl's formats: the
``xl list`` row format and header of xl_cmdimpl.c, ``xl list -l`` JSON from
the golden per-domain config, ``xl info`` from info.txt, and xl's messages
for an unknown domain ("X is an invalid domain identifier (rc=-6)", exit 2).

``remus`` stays in the foreground until SIGINT or SIGTERM (as the real
sender does while it checkpoints), recording itself in the state meanwhile.
"""
from __future__ import absolute_import, division, print_function

import fcntl
import getopt
import json
import os
import signal
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("FAKE_XL_DATA") or os.path.join(HERE, "..", "data", "xl")
XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
HEADER = "Name                                        ID   Mem VCPUs\tState\tTime(s)"


class Fail(Exception):
    def __init__(self, msg, code=1):
        Exception.__init__(self, msg)
        self.code = code


def unexpected(argv):
    raise Fail("fake xl: unexpected argv %s" % json.dumps(argv))


class State(object):
    """The JSON state file, locked for the whole command."""

    def __init__(self, path):
        self.path = path
        self.lockf = open(path + ".lock", "a")
        fcntl.flock(self.lockf, fcntl.LOCK_EX)
        with open(path) as f:
            self.data = json.load(f)

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, sort_keys=True)
        os.rename(tmp, self.path)

    def close(self):
        fcntl.flock(self.lockf, fcntl.LOCK_UN)
        self.lockf.close()

    def find(self, dom):
        for d in self.data["domains"]:
            if str(d["domid"]) == dom or d["name"] == dom:
                return d
        raise Fail("%s is an invalid domain identifier (rc=-6)" % dom, 2)

    def config_of(self, d):
        if d.get("config_json") is not None:
            return d["config_json"]
        if d.get("config"):
            with open(os.path.join(DATA, d["config"])) as f:
                return json.load(f)
        return None


def row(d):
    return "%-40s %5d %5d %5d     %s  %8.1f" % (d["name"], d["domid"], d["mem"], d["vcpus"], d["state"], d["time"])


def set_flag(d, letter, pos, on):
    s = list(d["state"])
    s[pos] = letter if on else "-"
    d["state"] = "".join(s)


def cmd_list(st, args):
    if args not in ([], ["-l"]) and not (len(args) == 1 and not args[0].startswith("-")) \
            and not (len(args) == 2 and args[0] == "-l" and not args[1].startswith("-")):
        unexpected(["list"] + args)
    long_ = bool(args) and args[0] == "-l"
    names = args[1:] if long_ else args
    doms = [st.find(names[0])] if names else sorted(st.data["domains"], key=lambda d: d["domid"])
    if long_:
        out = [{"domid": d["domid"], "config": st.config_of(d)} for d in doms if st.config_of(d) is not None]
        sys.stdout.write(json.dumps(out, indent=4, sort_keys=False) + "\n")
    else:
        sys.stdout.write(HEADER + "\n" + "".join(row(d) + "\n" for d in doms))


def cmd_info(st, args):
    if args:
        unexpected(["info"] + args)
    with open(os.path.join(DATA, "info.txt")) as f:
        sys.stdout.write(f.read())


def _one_dom(name, args):
    if len(args) != 1 or args[0].startswith("-"):
        unexpected([name] + args)
    return args[0]


def cmd_pause(st, args):
    d = st.find(_one_dom("pause", args))
    set_flag(d, "p", 2, True)
    st.save()


def cmd_unpause(st, args):
    d = st.find(_one_dom("unpause", args))
    set_flag(d, "p", 2, False)
    st.save()


def cmd_destroy(st, args):
    d = st.find(_one_dom("destroy", args))
    if d["domid"] == 0:
        raise Fail("libxl: error: libxl.c: non-destroyable domain 0", 1)
    st.data["domains"].remove(d)
    st.save()


def _opts(name, args, spec):
    try:
        opts, rest = getopt.getopt(args, spec)
    except getopt.GetoptError:
        unexpected([name] + args)
    return dict(opts), rest


def cmd_save(st, args):
    opts, rest = _opts("save", args, "c")
    if len(rest) != 2:
        unexpected(["save"] + args)
    d = st.find(rest[0])
    if d["domid"] == 0:
        raise Fail("cannot save domain 0", 1)
    config = json.dumps(st.config_of(d)).encode("utf-8")
    with open(rest[1], "wb") as f:
        f.write(XL_MAGIC + struct.pack("=IIII", 0x01020304, 1, 0, len(config) + 4))
        f.write(struct.pack("=I", len(config)) + config)
        f.write(json.dumps({"mem": d["mem"], "vcpus": d["vcpus"], "name": d["name"]}).encode("utf-8"))
    sys.stderr.write("Saving to %s new xl format (info 0x1/0x0/%d)\n" % (rest[1], len(config) + 4))
    if "-c" not in opts:
        st.data["domains"].remove(d)
    st.save()


def _add(st, name, mem, vcpus, config, paused):
    d = {"domid": st.data["next_domid"], "name": name, "mem": mem, "vcpus": vcpus,
         "state": "--p---" if paused else "-b----", "time": 0.0, "config": None, "config_json": config}
    st.data["next_domid"] += 1
    st.data["domains"].append(d)
    return d


def cmd_restore(st, args):
    opts, rest = _opts("restore", args, "p")
    if len(rest) != 1:
        unexpected(["restore"] + args)
    try:
        with open(rest[0], "rb") as f:
            data = f.read()
    except (IOError, OSError) as exc:
        raise Fail("Failed to open restore file %s: %s" % (rest[0], exc.strerror), 1)
    if not data.startswith(XL_MAGIC):
        raise Fail("File has wrong magic number - corrupt or for a different tool?", 1)
    off = len(XL_MAGIC) + 16
    (clen,) = struct.unpack("=I", data[off:off + 4])
    config = json.loads(data[off + 4:off + 4 + clen].decode("utf-8"))
    tail = json.loads(data[off + 4 + clen:].decode("utf-8"))
    _add(st, tail["name"], tail["mem"], tail["vcpus"], config, "-p" in opts)
    st.save()


def cmd_migrate(st, args):
    opts, rest = _opts("migrate", args, "s:pC:")
    if len(rest) != 2:
        unexpected(["migrate"] + args)
    d = st.find(rest[0])
    target = st.data.get("hosts", {}).get(rest[1])
    if target is None:
        raise Fail("ssh: Could not resolve hostname %s: Name or service not known\n"
                   "migration sender: Target closed connection before sending banner.\n"
                   "migration sender: Target refused to accept migration." % rest[1], 1)
    config = st.config_of(d)
    if "-C" in opts:
        config = {"c_info": {"name": d["name"], "type": "pv"}, "b_info": {}, "from_cfg_file": opts["-C"]}
    other = State(target)
    try:
        _add(other, d["name"], d["mem"], d["vcpus"], config, "-p" in opts)
        other.save()
    finally:
        other.close()
    st.data["domains"].remove(d)
    st.save()
    sys.stderr.write("migration sender: Target has acknowledged transfer.\n"
                     "migration sender: Giving target permission to start.\n"
                     "migration sender: Target reports successful startup.\n"
                     "Migration successful.\n")


def cmd_remus(st, args):
    opts, rest = _opts("remus", args, "i:ndbFus:")
    if len(rest) != 2 or ("-i" in opts and not opts["-i"].isdigit()):
        unexpected(["remus"] + args)
    d = st.find(rest[0])
    key = d["name"]
    if key in st.data["remus"]:
        raise Fail("remus already running for %s" % key, 1)
    st.data["remus"][key] = ["remus"] + args
    st.save()
    st.close()
    stop = []

    def _stop(signum, frame):
        stop.append(signum)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sys.stdout.write("Remus: protecting %s to %s every %s ms\n" % (key, rest[1], opts.get("-i", "200")))
    sys.stdout.flush()
    while not stop:
        time.sleep(0.05)
    st2 = State(st.path)
    try:
        st2.data["remus"].pop(key, None)
        st2.save()
    finally:
        st2.close()
    sys.stdout.write("Remus: stopped\n")
    return "closed"


COMMANDS = {"list": cmd_list, "info": cmd_info, "pause": cmd_pause, "unpause": cmd_unpause,
            "destroy": cmd_destroy, "save": cmd_save, "restore": cmd_restore, "migrate": cmd_migrate,
            "remus": cmd_remus}


def main(argv):
    log = os.environ.get("FAKE_XL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(argv) + "\n")
    if not argv or argv[0] not in COMMANDS:
        sys.stderr.write("fake xl: unexpected argv %s\n" % json.dumps(argv))
        return 1
    path = os.environ.get("FAKE_XL_STATE")
    if not path:
        sys.stderr.write("fake xl: FAKE_XL_STATE is not set\n")
        return 1
    st = State(path)
    try:
        if COMMANDS[argv[0]](st, argv[1:]) == "closed":
            return 0
    except Fail as exc:
        sys.stderr.write("%s\n" % exc)
        return exc.code
    finally:
        if not st.lockf.closed:
            st.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
