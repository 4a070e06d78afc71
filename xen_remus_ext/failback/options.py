"""The options of one failback, protect or reverse run, as one checked value.

:class:`FailbackOptions` is what the runner reads (``opts.rate``), built once
from the caller's dict (:meth:`FailbackOptions.from_dict`; ``None`` means
"the default") and checked in ``__new__``: a bad value is refused by name
before any step runs.  :meth:`FailbackOptions.journaled` is the part the
journal keeps (the xend migration hook sends the final delta from it).
"""
from __future__ import absolute_import, division, print_function

import collections
import numbers

from xen_remus_ext.compat import string_types
from xen_remus_ext.errors import ValidationError
from xen_remus_ext.model import ReplicatedDisk
from xen_remus_ext.resync.protocol import MIN_RATE

#: field -> default, in order
DEFAULTS = collections.OrderedDict([
    ("rate", None),                 # bytes/s for the pre-copy, None or 0: no cap (the final pass never has one)
    ("verify", False),
    ("discard_peer", False),        # name the peer's copy as the loser of a split brain
    ("ssh", "ssh"),
    ("key_file", None),
    ("interval_ms", 200),
    ("port", None),                 # relocation / migration port
    ("local_host", None),           # how the peer reaches this host
    ("dest_template", "%(host)s:%(path)s"),
    ("precopy_passes", 3),          # at most, while a tracker keeps the delta shrinking
    ("precopy_target", 4 << 20),    # stop pre-copying once a pass sends less than this
    ("net", True),
    ("disk", True),                 # False: memory-only Remus (xl remus -d); failback resyncs the disks
    ("accept_disk_loss", False),    # memory-only Remus on disks neither shared nor DRBD: the operator said so
    ("hold_backup", False),         # the backup keeps its copy paused when the stream breaks (for a cluster manager)
    ("shared_disks", ()),           # vdevs on storage both hosts share
    ("replicate", None),            # model.ReplicatedDisk: xl remus -d with xen-remus replicate's relay
    ("find_replicated", True),      # a new run replicates the disk `xen-remus replicate serve` serves here
    ("replicate_timeout", 3.0),     # the backup's silence timeout of a disk found served
    ("config_file", None),          # the domain's cfg file: preflight checks it reverses cleanly
    ("settle_timeout", 120.0),      # a killed run's migration may still be running in the toolstack
    ("settle_poll", 0.1),
    ("supervise", None),            # (host or None) -> None: start the generation supervisor there
])

#: the options a journal keeps
JOURNALED = ("rate", "verify", "discard_peer", "interval_ms", "port", "local_host", "dest_template", "ssh",
             "key_file", "replicate")


def _number(name, value, minimum, integer=False, allow_none=False, exclusive=False):
    if value is None and allow_none:
        return None
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum or \
            (exclusive and value == minimum):
        raise ValidationError("option %s: expected %s %s %s%s, got %r"
                              % (name, "an integer" if integer else "a number", ">" if exclusive else ">=",
                                 minimum, " or none" if allow_none else "", value))
    return value


def _text(name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, string_types) or not value:
        raise ValidationError("option %s: expected a non-empty string%s, got %r"
                              % (name, " or none" if allow_none else "", value))
    return value


class FailbackOptions(collections.namedtuple("FailbackOptions", list(DEFAULTS))):
    """The checked options of one run; fields and defaults: :data:`DEFAULTS`."""

    __slots__ = ()

    def __new__(cls, **kw):
        unknown = sorted(set(kw) - set(DEFAULTS))
        if unknown:
            raise ValidationError("options: expected only %s, got %s" % (", ".join(DEFAULTS), ", ".join(unknown)))
        v = dict(DEFAULTS)
        v.update(kw)
        v["rate"] = _number("rate", v["rate"], 0, allow_none=True)
        if v["rate"] and v["rate"] < MIN_RATE:
            raise ValidationError("option rate: expected 0 (no cap) or at least %d bytes/s, got %r"
                                  % (MIN_RATE, v["rate"]))
        v["interval_ms"] = _number("interval_ms", v["interval_ms"], 0, integer=True, exclusive=True)
        v["port"] = _number("port", v["port"], 1, integer=True, allow_none=True)
        if v["port"] is not None and v["port"] > 65535:
            raise ValidationError("option port: expected 1-65535, got %r" % (v["port"],))
        v["precopy_passes"] = _number("precopy_passes", v["precopy_passes"], 1, integer=True)
        v["precopy_target"] = _number("precopy_target", v["precopy_target"], 0, integer=True)
        v["settle_timeout"] = _number("settle_timeout", v["settle_timeout"], 0)
        v["settle_poll"] = _number("settle_poll", v["settle_poll"], 0, exclusive=True)
        v["ssh"] = _text("ssh", v["ssh"])
        v["key_file"] = _text("key_file", v["key_file"], allow_none=True)
        v["local_host"] = _text("local_host", v["local_host"], allow_none=True)
        v["config_file"] = _text("config_file", v["config_file"], allow_none=True)
        template = _text("dest_template", v["dest_template"])
        try:
            template % {"host": "h", "path": "/p", "vdev": "xvda"}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("option dest_template: expected %%(host)s, %%(path)s and %%(vdev)s "
                                  "placeholders only, got %r (%s)" % (template, exc))
        shared = v["shared_disks"]
        if isinstance(shared, string_types) or not all(isinstance(s, string_types) for s in shared or ()):
            raise ValidationError("option shared_disks: expected a list of vdevs, got %r" % (shared,))
        v["shared_disks"] = tuple(shared or ())
        rep = v["replicate"]
        if isinstance(rep, dict):
            if sorted(rep) not in (["control", "vdev"], ["control", "timeout", "vdev"]):
                raise ValidationError("option replicate: expected the fields vdev, control and timeout, got %s"
                                      % (", ".join(sorted(str(k) for k in rep)) or "none"))
            rep = ReplicatedDisk(**rep)
        if rep is not None and not isinstance(rep, ReplicatedDisk):
            raise ValidationError("option replicate: expected a replicated disk (vdev, control, timeout) or "
                                  "none, got %r" % (rep,))
        if rep is not None and v["disk"]:
            raise ValidationError("option replicate: the replicated disk runs under memory-only Remus "
                                  "(disk false), got disk true")
        v["replicate"] = rep
        timeout = v["replicate_timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not 0.5 <= timeout <= 3600:
            raise ValidationError("option replicate_timeout: expected seconds from 0.5 to 3600, got %r" % (timeout,))
        v["replicate_timeout"] = float(timeout)
        if v["supervise"] is not None and not callable(v["supervise"]):
            raise ValidationError("option supervise: expected a callable or none, got %r" % (v["supervise"],))
        for name in ("verify", "discard_peer", "net", "disk", "accept_disk_loss", "hold_backup", "find_replicated"):
            v[name] = bool(v[name])
        return super(FailbackOptions, cls).__new__(cls, **v)

    @classmethod
    def from_dict(cls, options=None):
        """From a caller's dict; a ``None`` value keeps the default.

        :raises ValidationError: an unknown option or a bad value
        """
        if isinstance(options, cls):
            return options
        return cls(**dict((k, v) for k, v in (options or {}).items() if v is not None))

    def journaled(self):
        """:returns: the dict of :data:`JOURNALED` options the journal keeps
        (JSON values: the replicated disk as its dict, or None)."""
        out = dict((k, getattr(self, k)) for k in JOURNALED)
        if self.replicate is not None:
            out["replicate"] = self.replicate.to_dict()
        return out

    @staticmethod
    def check_journaled(options):
        """Check a journal's ``options`` dict as a run would read it.

        :raises ValidationError: a bad value (the replicated disk implies
            memory-only Remus, which the journal does not repeat)."""
        opts = dict((k, v) for k, v in (options or {}).items() if v is not None)
        if opts.get("replicate") is not None:
            opts["disk"] = False
        return FailbackOptions(**opts)
