"""xend's device-migrate steps: the final disk delta while the domain is suspended.

docs/xen-facts.md section 4.  During ``xm migrate`` (and ``xm save``) xend calls
each device controller's ``migrate(deviceConfig, network, dst, step, domName)``
for steps 0 (may this device migrate?), 1 (before the config and memory are
sent), 2 (the domain is suspended) and 3 (before the image is finished),
and ``recover_migrate`` with the last step that succeeded when a later one
failed.  The base controller runs xend-config's ``external-migration-tool``
as ``TOOL -type CLASS -step N -host DST -domname NAME [-recover]`` and fails
the migration when it exits non-zero.

What this package does at each step, for ``tap``/``tap2`` (blktap) disks of
a migration (``dst`` is a host; for ``xm save`` it is the file's path, and
nothing is done):

====  ==================================================================
step  action
====  ==================================================================
0     nothing (the check is the failback preflight's job)
1     forget any "delta acknowledged" mark of an earlier attempt
2     :func:`failback.delta.final_delta_for` (domname, dst): send the last
      disk changes and return only once the peer acknowledged them; then
      mark it, so the other disks of the domain (xend calls each device)
      and a second route (tool and controller override) skip it
3     nothing (the delta was acknowledged at step 2)
rec.  forget the mark: the domain runs on here, the next attempt resends
====  ==================================================================

Other device classes return at once: xend runs the tool for every device,
inside the suspended window at step 2, so the fast path imports nothing.
:func:`plan_step` is pure; :func:`apply_step` does the work.
"""
from __future__ import absolute_import, division, print_function

import collections
import logging
import os

from xen_remus_ext.errors import ToolstackError, ValidationError
from xen_remus_ext.paths import state_dir

log = logging.getLogger(__name__)

DISK_CLASSES = ("tap", "tap2")
STEPS = (0, 1, 2, 3)

NOTHING = "nothing"
CLEAR = "clear-mark"
FINAL_DELTA = "final-delta"
RECOVER = "recover"


class HookCall(collections.namedtuple("HookCall", "devclass step host domname recover")):
    """One call of the migration tool (or of a controller's ``migrate``)."""

    __slots__ = ()

    def __new__(cls, devclass, step, host, domname, recover=False):
        if step not in STEPS:
            raise ValidationError("migrate step: expected one of 0-3, got %r" % (step,))
        for name, val in (("type", devclass), ("host", host), ("domname", domname)):
            if not val:
                raise ValidationError("migrate -%s: expected a value, got %r" % (name, val))
        return super(HookCall, cls).__new__(cls, devclass, step, host, domname, bool(recover))

    @property
    def is_save(self):
        """``xm save``: xend passes the save file as ``dst``; host names never hold '/'."""
        return "/" in self.host


def parse_args(argv):
    """Parse the tool's arguments as xend passes them.

    :param argv: e.g. ``['-type', 'tap2', '-step', '2', '-host', 'h1',
                 '-domname', 'web1']`` (+ ``'-recover'``)
    :returns: :class:`HookCall`
    :raises ValidationError: a missing, repeated or unknown argument
    """
    values = {}
    recover = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-recover", "--recover"):
            recover = True
            i += 1
            continue
        key = arg.lstrip("-")
        if not arg.startswith("-") or key not in ("type", "step", "host", "domname"):
            raise ValidationError("migration tool argument: expected -type, -step, -host, "
                                  "-domname or -recover, got %r" % (arg,))
        if i + 1 >= len(args):
            raise ValidationError("migration tool -%s: expected a value, got none" % key)
        if key in values:
            raise ValidationError("migration tool -%s: expected once, got twice" % key)
        values[key] = args[i + 1]
        i += 2
    for key in ("type", "step", "host", "domname"):
        if key not in values:
            raise ValidationError("migration tool: expected -%s, got %s" % (key, " ".join(args)))
    try:
        step = int(values["step"])
    except ValueError:
        raise ValidationError("migration tool -step: expected 0-3, got %r" % values["step"])
    return HookCall(values["type"], step, values["host"], values["domname"], recover)


def plan_step(call):
    """:returns: the action for ``call``: NOTHING, CLEAR, FINAL_DELTA or RECOVER."""
    if call.devclass not in DISK_CLASSES or call.is_save:
        return NOTHING
    if call.recover:
        return RECOVER
    if call.step == 1:
        return CLEAR
    if call.step == 2:
        return FINAL_DELTA
    return NOTHING


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in name)


def mark_path(domname, host, base=None):
    """Where "final delta acknowledged for this migration" is recorded."""
    base = base or state_dir()
    return os.path.join(base, "hook", "%s@%s.delta-acked" % (_safe(domname), _safe(host)))


def _clear(path):
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def _final_delta(domname, host):
    try:
        from xen_remus_ext import wiring  # heavy: only on the suspended disk path
        from xen_remus_ext.failback import delta
        from xen_remus_ext.toolstack import delta_handoff
    except ImportError as exc:
        raise ToolstackError("failback.delta: expected the final-delta module, got %s" % (exc,))
    return delta.final_delta_for(domname, host, disk_sync_for=wiring.resync_disk_sync,
                                 tracker_fn=journal_trackers(domname), handoff=delta_handoff.request)


def journal_trackers(domname, base=None):
    """``f(vdev)`` -> the dirty-block tracker the failback's pre-copy marked
    for that disk, or None.  Only a tracker whose mark outlives the process
    that set it can serve here (this hook runs in xend's tool process): the
    reflink + FIEMAP tracker keeps its mark as a clone beside the image, the
    blktap2 log tracker its mark and extents in the state directory."""
    from xen_remus_ext.failback import journal
    rec = journal.load(domname, base) or {}
    kinds = dict((d.get("vdev"), (d.get("tracker"), d.get("src"))) for d in rec.get("disks", ()))

    def get(vdev):
        kind, src = kinds.get(vdev, (None, None))
        if kind == "fiemap" and src:
            from xen_remus_ext.trackers.fiemap import FiemapTracker
            return FiemapTracker(src)
        if kind == "blktap2-log":
            from xen_remus_ext.trackers import blktap2_log
            return blktap2_log.reopen(blktap2_log.state_file(domname, vdev, base))
        return None
    return get


def _describe(result):
    """A short text for the delta record ``final_delta_for`` returns."""
    if isinstance(result, dict):
        parts = ["by %s" % result.get("by", "?")]
        if result.get("seconds") is not None:
            parts.append("%.3f s" % result["seconds"])
        return ", ".join(parts)
    return str(result)


def apply_step(call, delta_fn=None, base=None):
    """Do what :func:`plan_step` says.

    :param delta_fn: ``f(domname, host)`` sending the final delta and
                     returning once it is acknowledged (default
                     :func:`failback.delta.final_delta_for`); it returns None
                     when no failback of the domain is migrating, and
                     raises on failure
    :returns: a one-line report (xend logs the tool's output)
    :raises XenRemusError: the delta could not be sent: xend then fails the
            migration and the domain resumes here, disks untouched
    """
    action = plan_step(call)
    what = "%s step %d %s -> %s" % (call.devclass, call.step, call.domname, call.host)
    if action == NOTHING:
        return "%s: nothing to do" % what
    path = mark_path(call.domname, call.host, base)
    if action in (CLEAR, RECOVER):
        had = _clear(path)
        if action == RECOVER:
            log.warning("%s: migration failed after this step; the domain stays here, "
                        "the next attempt sends the delta again", what)
            return "%s -recover: %s" % (what, "mark cleared" if had else "nothing sent yet")
        return "%s: ready" % what
    if os.path.exists(path):
        return "%s: final delta already acknowledged" % what
    fn = delta_fn or _final_delta
    result = fn(call.domname, call.host)
    if result is None:  # no failback of this domain is migrating: a plain xm migrate
        return "%s: no failback in progress, nothing to send" % what
    result = _describe(result)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "w") as fh:
        fh.write("%s\n" % (result,))
    log.info("%s: final delta acknowledged (%s)", what, result)
    return "%s: final delta acknowledged (%s)" % (what, result)
