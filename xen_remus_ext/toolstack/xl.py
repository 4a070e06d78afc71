"""xl adapter: the ``xl`` command (Xen 4.5+; docs/xen-facts.md section 6).

Every call is an argv list run through an injected :class:`ports.Runner`;
a non-zero exit becomes :class:`ToolstackError` carrying xl's stderr.

What is parsed (formats from ``tools/libxl/xl_cmdimpl.c``, 4.5):

* ``xl list [DOM]``: a header, then ``%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f``
  (name, id, MiB, vcpus, state letters ``rbpscd``, cpu seconds);
* ``xl list -l [DOM]``: a JSON array of ``{"domid": N, "config":
  libxl_domain_config}`` (``c_info``, ``b_info``, ``disks``, ``nics``...,
  enums as lower-case strings, keyed unions as ``"type.pv"``);
* ``xl info``: ``key                    : value`` lines, ``free_memory`` in MiB.

Commands sent: ``pause``, ``unpause``, ``destroy``, ``save [-c] DOM FILE``,
``restore [-p] FILE``, ``migrate [-s SSHCMD] [-p] [-C CFG] DOM HOST`` (``-p``,
leave paused on arrival, exists from 4.8.0), and ``remus [-i MS] [-n] [-d]
[-b] [-F] [-s SSHCMD] DOM HOST``, which runs for as long as protection
lasts: it is started in the background by :class:`RemusProcesses` and
stopped with SIGINT to the PID we started.  libxl refuses ``-n``, ``-d``
and ``-b`` unless ``-F`` (allow unsafe) is given too
(``libxl_domain_remus_start``), so those add ``-F``.

Disks under xl Remus: xl has no ``remus:`` uname; it replicates disks with
DRBD only, or not at all with ``-d`` (memory-only Remus, e.g. where DRBD
lacks protocol D).  With ``memory_only=True`` every writable, non-cdrom
disk counts as a replicated disk whose peer copy failback must resync:
its :class:`model.RemusSpec` names no host (``""``: the backup is the host
``xl remus`` is given, not part of the uname).  Hence no ``retarget_disks``
here (xend has one, for blktap2's ``tap:remus:`` unames): there is no
replication target in a disk to re-point, so ``--reverse-only`` just runs
``xl remus`` toward the new backup.

Dirty-block tracking: with ``tracker="fiemap"`` the adapter offers
``tracker_for(dom, vdev)``, a reflink + FIEMAP tracker
(trackers/fiemap.py) on the disk's image file, which must sit on a
reflink filesystem (XFS ``-m reflink=1``, Btrfs); failback's pre-copy
passes after the first and its final delta then send only what was written.

xl has no non-live migration and no relocation port (it tunnels through
``ssh``), so ``live=False`` and ``port`` are refused, not ignored.

A held backup (``remus_start(hold=True)``, for a cluster manager): ``xl
migrate-receive -r`` resumes the backup as soon as its stdin ends
(``migrate_receive`` in xl_migrate.c unpauses unconditionally on that
path), so ``xl remus -s ""`` is given the whole receiver command as its HOST
(xl runs it with ``sh -c``): ``exec SSH -- HOST xen-remus hold receive
--domain DOM -- xl migrate-receive -r``.  On the backup the holder keeps
xl's stdin open after the stream breaks (toolstack/hold.py);
:meth:`XlToolstack.remus_takeover` releases it, :meth:`XlToolstack.remus_discard`
destroys the copy without a failover, and :meth:`XlToolstack.remus_backup`
reports the holder's state and committed checkpoints.
"""
from __future__ import absolute_import, division, print_function

import json

from six.moves import shlex_quote

from xen_remus_ext import model
from xen_remus_ext.compat import string_types, to_text
from xen_remus_ext.errors import ToolstackError, ValidationError
from xen_remus_ext.ports import Toolstack
from xen_remus_ext.toolstack import hold
from xen_remus_ext.toolstack.processes import RemusProcesses


def parse_xl_list(text):
    """``xl list`` output -> list of :class:`model.DomainInfo`."""
    out = []
    lines = to_text(text).splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise ToolstackError("xl list: expected a header starting with 'Name', got %r" % (lines[:1],))
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise ToolstackError("xl list: expected name, id, mem, vcpus, state, time; got %r" % (line,))
        try:
            out.append(model.DomainInfo(int(fields[-5]), " ".join(fields[:-5]), fields[-2], int(fields[-4])))
        except ValueError:
            raise ToolstackError("xl list: expected numeric id and mem, got %r" % (line,))
    return out


def parse_xl_info(text):
    """``xl info`` output -> dict (``free_memory`` and friends as ints)."""
    info = {}
    for line in to_text(text).splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in info:            # multi-line values (numa_info ...) are not needed
            continue
        info[key] = int(value) if value.isdigit() else value
    if "free_memory" not in info or not isinstance(info["free_memory"], int):
        raise ToolstackError("xl info: expected 'free_memory : N', got none")
    if "xen_version" not in info and "xen_major" in info:
        info["xen_version"] = "%s.%s%s" % (info["xen_major"], info.get("xen_minor", 0), info.get("xen_extra", ""))
    return info


def xen_version(info):
    """``xen_version`` of a host_info dict as ``(major, minor)``, or None."""
    parts = str(info.get("xen_version") or "").split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def _disk_uname(d):
    path = d.get("pdev_path") or ""
    script = d.get("script") or ""
    fmt = d.get("format") or "raw"
    if script.endswith("block-drbd"):
        return "drbd:%s" % path
    if d.get("backend") == "phy":
        return "phy:%s" % path
    if fmt in ("qcow", "qcow2", "vhd"):
        return "tap:%s:%s" % (fmt, path)
    return ("phy:%s" if path.startswith("/dev/") else "file:%s") % path


def domain_config_from_xl_json(obj, source="xl list -l", memory_only=False):
    """One element of ``xl list -l``'s array -> :class:`model.DomainConfig` (format ``xl``).

    Memory is ``target_memkb`` (else ``max_memkb``) in MiB; each disk's
    uname is rebuilt from backend/format/script the way an xl disk spec
    names them (``phy:``, ``file:``, ``tap:qcow2:``, ``drbd:``).
    ``memory_only``: writable disks get a host-less :class:`model.RemusSpec`
    (see the module docstring).
    """
    cfg = obj.get("config", obj) if isinstance(obj, dict) else None
    if not isinstance(cfg, dict) or "c_info" not in cfg:
        raise ToolstackError("%s: expected {domid, config: {c_info, b_info, ...}}, got %s"
                             % (source, json.dumps(obj)[:80]))
    c_info = cfg.get("c_info") or {}
    b_info = cfg.get("b_info") or {}
    memkb = b_info.get("target_memkb") or b_info.get("max_memkb")
    kernel = b_info.get("kernel") or (b_info.get("type.pv") or {}).get("kernel")
    disks = []
    for d in cfg.get("disks") or []:
        vdev = d.get("vdev")
        writable = bool(d.get("readwrite", 1))
        remus = None
        if memory_only and writable and not d.get("is_cdrom") and d.get("pdev_path"):
            remus = model.RemusSpec("", None, d.get("format") or "raw", d["pdev_path"])
        disks.append(model.DiskSpec(_disk_uname(d), vdev, "w" if writable else "r", remus=remus,
                                    devtype="cdrom" if d.get("is_cdrom") else "disk"))
    vifs = []
    for n in cfg.get("nics") or []:
        vifs.append(",".join("%s=%s" % (k, n[k]) for k in ("mac", "bridge", "ip", "script") if n.get(k)))
    options = {}
    for key in ("uuid", "pool_name"):
        if c_info.get(key):
            options[key] = c_info[key]
    if obj.get("domid") is not None:
        options["domid"] = obj["domid"]
    for key in ("on_poweroff", "on_reboot", "on_crash"):
        if cfg.get(key):
            options[key] = cfg[key]
    try:
        return model.DomainConfig(name=c_info.get("name"), memory=memkb // 1024 if memkb else None,
                                  builder="hvm" if c_info.get("type") == "hvm" else "linux",
                                  kernel=kernel, vcpus=b_info.get("max_vcpus", 1), vifs=vifs, disks=disks,
                                  options=options, source=source, format="xl")
    except ValidationError as exc:
        raise ToolstackError("%s: %s" % (source, exc))


class XlToolstack(Toolstack):
    """:class:`ports.Toolstack` driving ``xl``.

    :param runner: a :class:`ports.Runner`
    :param xl: the xl command: a path or an argv prefix (default ``"xl"``)
    :param processes: :class:`RemusProcesses` for ``xl remus``
    :param remus_ssh: default ``-s`` for ``xl remus`` (None: xl's own ``ssh``)
    :param memory_only: Remus runs with ``-d``; writable disks are resynced
        by failback (see the module docstring)
    :param tracker: None, or ``"fiemap"``: :meth:`tracker_for` gives reflink +
        FIEMAP trackers (else None, the port's default: no tracking)
    :param state_base: the state directory of backup holders (default: the
        package's state dir; toolstack/hold.py)
    :param served: callable ``dev -> control socket path or None``: the
        ``xen-remus replicate serve`` whose NBD device ``dev`` is, on this
        host (replication/registry.py); None: no disk counts as served
    :param served_list: callable ``() -> [{device, image, control}]``, the
        live servers of this host (:meth:`served_devices`); for a peer,
        wiring gives one that runs ``xen-remus replicate list --json`` there
    """

    TRACKERS = ("fiemap",)

    kind = "xl"

    def remus_needs_running_domain(self):
        # libxc's live pass over a PV guest's page tables retries an entry
        # that names a frame outside the guest (e.g. its shared-info
        # mapping) only while the domain runs; with the domain paused it
        # fails the save ("Bad mfn for L1[...]", normalise_pagetable in
        # xg_sr_save_x86_pv.c), so xl remus must start on a running domain
        return True

    def __init__(self, runner, xl="xl", processes=None, host=None, remus_ssh=None, timeout=None,
                 memory_only=False, tracker=None, state_base=None, served=None, served_list=None):
        self.runner = runner
        self.served = served
        self.served_list = served_list
        self.state_base = state_base
        self.xl = [xl] if isinstance(xl, string_types) else list(xl)
        self.processes = processes or RemusProcesses()
        self.host = host
        self.remus_ssh = remus_ssh
        self.timeout = timeout
        self.memory_only = memory_only
        if tracker is not None and tracker not in self.TRACKERS:
            raise ValidationError("xl tracker: expected one of %s, got %r" % (", ".join(self.TRACKERS), tracker))
        self.tracker = tracker

    def run(self, args):
        """Run ``xl ARGS``; :returns: stdout (text); :raises ToolstackError: non-zero exit."""
        argv = self.xl + [str(a) for a in args]
        try:
            rc, out, err = self.runner.run(argv, timeout=self.timeout)
        except (IOError, OSError) as exc:
            raise ToolstackError("xl %s: cannot run %s: %s" % (" ".join(argv[len(self.xl):]), self.xl[0], exc))
        if rc != 0:
            msg = to_text(err or b"", errors="replace").strip() or "(no message)"
            raise ToolstackError("xl %s: exit %d: %s" % (" ".join(argv[len(self.xl):]), rc, msg))
        return to_text(out or b"", errors="replace")

    # -- queries -----------------------------------------------------------------

    def _with_host(self, infos):
        return [i._replace(host=self.host) for i in infos]

    def list_domains(self):
        return self._with_host(parse_xl_list(self.run(["list"])))

    def domain_info(self, dom):
        found = parse_xl_list(self.run(["list", dom]))
        if len(found) != 1:
            raise ToolstackError("xl list %s: expected one domain, got %d" % (dom, len(found)))
        return self._with_host(found)[0]

    def domain_config(self, dom):
        text = self.run(["list", "-l", dom])
        try:
            doms = json.loads(text)
        except ValueError as exc:
            raise ToolstackError("xl list -l %s: expected JSON (output_format=\"json\" in xl.conf), got %r: %s"
                                 % (dom, text[:60], exc))
        if not isinstance(doms, list) or len(doms) != 1:
            raise ToolstackError("xl list -l %s: expected a one-element JSON array, got %s" % (dom, text[:60]))
        return domain_config_from_xl_json(doms[0], source="xl list -l %s" % (dom,), memory_only=self.memory_only)

    def host_info(self):
        return parse_xl_info(self.run(["info"]))

    def check_migrate_paused(self):
        """``xl migrate -p`` (leave the domain paused on arrival) came with Xen 4.8.0."""
        ver = xen_version(self.host_info())
        if ver is not None and ver < (4, 8):
            return "xl on Xen %d.%d: expected 4.8.0 or later for `xl migrate -p`" % ver
        return None

    #: the name ``xl migrate-receive`` (and so ``xl remus`` on the backup)
    #: gives a domain while its copy arrives
    INCOMING_SUFFIX = "--incoming"

    def remus_backup(self, dom):
        """``DOM--incoming`` is a backup copy.  Received through our holder
        (``remus_start(hold=True)``) on this host, its state and committed
        checkpoints are the holder's; else ``receiving`` with an unknown count."""
        if not str(dom).endswith(self.INCOMING_SUFFIX):
            return None
        base = str(dom)[:-len(self.INCOMING_SUFFIX)]
        st = hold.backup_status(base, self.state_base) if self.host is None else self._peer_hold_status(base)
        if st is not None:
            return st
        return {"state": "receiving", "checkpoints": None}

    def _peer_argv(self, args):
        """``xen-remus ARGS`` on this adapter's host, through the same ssh
        prefix as its ``xl`` (the holder's state is local to that host)."""
        from xen_remus_ext.resync.transport import remote_command
        return self.xl[:-1] + [shlex_quote(w) for w in remote_command() + [str(a) for a in args]]

    def _peer_hold_status(self, dom):
        """:func:`hold.backup_status` of ``dom`` on the remote host (``xen-remus
        hold show``), or None when it has no live holder or cannot tell."""
        try:
            rc, out, _err = self.runner.run(self._peer_argv(["-q", "hold", "show", "--toolstack", "xl", dom]),
                                            timeout=self.timeout)
        except (IOError, OSError):
            return None
        if rc != 0:
            return None
        try:
            st = json.loads(to_text(out or b""))
        except ValueError:
            return None
        if not isinstance(st, dict) or not st.get("alive") or st.get("state") not in (hold.RECEIVING, hold.HELD):
            return None
        return {"state": "broken" if st["state"] == hold.HELD else "receiving",
                "checkpoints": st.get("checkpoints"), "held": st["state"] == hold.HELD}

    def check_hold(self):
        """Held per stream: ``remus_start(hold=True)`` runs ``xen-remus hold
        receive`` before xl's receiver on the backup (toolstack/hold.py)."""
        return None

    def hold_on_stream_break(self, hold=True):
        """Nothing to set on an xl backup: the primary asks for the hold per
        stream (``remus_start(hold=True)``); this host needs only ``xen-remus``."""

    def _local_only(self, what, dom):
        if self.host is not None:
            raise ToolstackError("%s of %s: run it on the backup %s itself (its holder is local there)"
                                 % (what, dom, self.host))

    def remus_takeover(self, dom, timeout=120.0):
        """Release the held copy of ``dom``: xl fails over (renames
        ``DOM--incoming`` to ``DOM``, unpauses it); returns once ``DOM`` runs."""
        self._local_only("takeover", dom)
        st = hold.release(str(dom), timeout=timeout, base=self.state_base)
        if st is not None and st.get("rc") not in (0, None):
            raise ToolstackError("takeover of %s: xl migrate-receive exited with %s after the release (log: %s)"
                                 % (dom, st.get("rc"), hold.log_path(str(dom), self.state_base)))
        info = self.domain_info(dom)
        if info.paused:
            raise ToolstackError("takeover of %s: expected it running after the failover, got it paused" % (dom,))

    def remus_discard(self, dom):
        """Destroy the backup copy of ``dom`` here without resuming it: its
        holder kills xl's receiver first, so xl never fails over.  On a
        remote host: ``xen-remus hold discard DOM`` there, over ssh."""
        if self.host is not None:
            argv = self._peer_argv(["hold", "discard", "--toolstack", "xl", dom])
            try:
                rc, _out, err = self.runner.run(argv, timeout=self.timeout)
            except (IOError, OSError) as exc:
                raise ToolstackError("discard the backup copy of %s on %s: cannot run %s: %s"
                                     % (dom, self.host, argv[0], exc))
            if rc != 0:
                raise ToolstackError("discard the backup copy of %s on %s: xen-remus hold discard exit %d: %s"
                                     % (dom, self.host, rc, to_text(err or b"", errors="replace").strip()
                                        or "(no message)"))
            return
        st = hold.discard(str(dom), base=self.state_base)
        incoming = str(dom) + self.INCOMING_SUFFIX
        if any(i.name == incoming for i in self.list_domains()):
            self.destroy(incoming)
        elif st is None:
            raise ToolstackError("discard the backup copy of %s: expected %s here, found none" % (dom, incoming))

    def tracks_writes(self):
        return self.tracker is not None

    def tracker_for(self, dom, vdev):
        """:returns: a :class:`FiemapTracker` on ``dom``'s disk ``vdev`` (not
        yet marked) when built with ``tracker="fiemap"``, else None."""
        if self.tracker is None:
            return None
        from xen_remus_ext.trackers.fiemap import FiemapTracker
        for d in self.domain_config(dom).disks:
            if d.vdev == vdev:
                return FiemapTracker(d.path)
        raise ToolstackError("xl tracker of %s: expected a disk %s, got none" % (dom, vdev))

    # -- lifecycle -----------------------------------------------------------------

    def pause(self, dom):
        self.run(["pause", dom])

    def unpause(self, dom):
        self.run(["unpause", dom])

    def destroy(self, dom):
        self.run(["destroy", dom])

    def create_from_file(self, path):
        self.run(["create", path])

    def save(self, dom, path, checkpoint=False):
        self.run(["save"] + (["-c"] if checkpoint else []) + [dom, path])

    def restore(self, path, paused=False):
        self.run(["restore"] + (["-p"] if paused else []) + [path])

    def migrate_argv(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None):
        if not live:
            raise ToolstackError("xl migrate of %s: xl only migrates live (asked for live=False)" % (dom,))
        if port:
            raise ToolstackError("xl migrate of %s: xl has no relocation port, it runs over ssh "
                                 "(asked for port %s)" % (dom, port))
        args = ["migrate"]
        if ssh is not None:
            args += ["-s", ssh]
        if paused:
            args.append("-p")
        if config:
            args += ["-C", config]
        return args + [str(dom), dst]

    def migrate(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None):
        self.run(self.migrate_argv(dom, dst, live, port, paused, ssh, config))

    # -- remus -------------------------------------------------------------------

    def hold_receiver(self, dom, host, ssh=None):
        """``xl remus -s ""`` runs its HOST argument as the whole command:
        this one runs ``xen-remus hold receive --domain DOM -- xl
        migrate-receive -r`` on ``host`` over ``ssh``."""
        from xen_remus_ext.resync.transport import remote_argv, remote_command
        words = remote_command() + ["hold", "receive", "--domain", str(dom), "--", "xl", "migrate-receive", "-r"]
        argv = remote_argv(ssh if ssh is not None else (self.remus_ssh or "ssh"), host, words)
        return "exec " + " ".join(shlex_quote(a) for a in argv)

    #: the command xl runs in place of ssh for a replicated disk (on the primary's PATH)
    REPLICATE_COMMAND = "xen-remus replicate relay"

    def check_replicate(self):
        return None

    def use_memory_only(self):
        self.memory_only = True

    def served_devices(self):
        if self.served_list is None:
            return None
        return [dict((k, r.get(k)) for k in ("device", "image", "control")) for r in self.served_list()]

    def served_disks(self, dom):
        """The writable disks of ``dom`` whose backend device is the NBD
        device of a ``xen-remus replicate serve`` on this host (its registry
        entry names the device, and the server answers on its control socket)."""
        if self.served is None:
            return {}
        out = {}
        for d in self.domain_config(dom).disks:
            if d.mode != "w" or d.devtype != "disk" or not d.uname.startswith("phy:"):
                continue
            control = self.served(d.uname[len("phy:"):])
            if control is not None:
                out[d.vdev] = control
        return out

    def relay_command(self, replicate, ssh=None, hold_domain=None):
        """The ``-s`` command for ``xl remus`` with ``replicate`` (a
        :class:`model.ReplicatedDisk`): xen-remus's relay, reaching the backup
        by ``ssh`` (xl's own ``-s``, default ``ssh``).  xl runs it through
        ``/bin/sh -c "exec CMD HOST xl migrate-receive ..."``.

        ``hold_domain``: the backup relay runs xl's receiver behind ``xen-remus
        hold receive --domain DOM`` (a held backup): at failover it drops the
        uncommitted epochs and ends the stream as always, and the holder keeps
        the copy paused, disk at its last committed checkpoint, until released."""
        words = self.REPLICATE_COMMAND.split() + ["--control", replicate.control,
                                                  "--timeout", "%g" % replicate.timeout]
        if ssh is not None:
            words += ["--ssh", ssh]
        if hold_domain is not None:
            words += ["--hold-domain", str(hold_domain)]
        return " ".join(shlex_quote(w) for w in words)

    def remus_argv(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                   blackhole=False, unsafe=False, ssh=None, hold=False, replicate=None):
        if port:
            raise ToolstackError("xl remus of %s: xl has no port option, it runs over ssh (asked for %s)"
                                 % (dom, port))
        ssh = ssh if ssh is not None else self.remus_ssh
        if hold and blackhole:
            raise ToolstackError("xl remus of %s: a blackhole backup has no copy to hold" % (dom,))
        if replicate is not None:
            # libxl's own disk checkpointing knows DRBD only: -d, and the relay carries the disk;
            # a held backup is held by the relay's backup end, in front of xl's receiver
            disk = False
            ssh = self.relay_command(replicate, ssh, hold_domain=dom if hold else None)
            hold = False
        args = ["remus", "-i", str(int(interval_ms))]
        if not net:
            args.append("-n")
        if not disk:
            args.append("-d")
        if blackhole:
            args.append("-b")
        if unsafe or blackhole or not net or not disk:
            args.append("-F")
        if hold:
            tail = ["-s", "", str(dom), self.hold_receiver(dom, host, ssh)]
            if self.host is not None:       # run over ssh on the peer: its shell reads these words again
                tail = [shlex_quote(a) for a in tail]
            return self.xl + args + tail
        if ssh is not None:
            # the relay's command is several words: over ssh on the peer its shell reads them again
            args += ["-s", shlex_quote(ssh) if replicate is not None and self.host is not None else ssh]
        return self.xl + args + [str(dom), host]

    def remus_start(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                    blackhole=False, unsafe=False, ssh=None, hold=False, replicate=None):
        argv = self.remus_argv(dom, host, interval_ms, port, net, disk, blackhole, unsafe, ssh, hold, replicate)
        # xl remus on a slow host may take longer to reject an unknown domain
        # than start() watches it: ask first, so that this fails here
        self.domain_info(dom)
        return self.processes.start(dom, argv, match=argv[len(self.xl):])

    def remus_stop(self, dom):
        return self.processes.stop(dom)

    def remus_running(self, dom):
        return self.processes.running(dom)
