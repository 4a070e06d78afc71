"""Our xenstore keys: ``/local/domain/<domid>/remus-ext/`` (feeds ``remus-status``).

Layout (all values printable ASCII, written in one transaction):

=================  ==========================================================
key                value
=================  ==========================================================
``role``           ``primary``, ``backup`` or ``unprotected``
``state``          a lower-case word of the cycle, e.g. ``protected``,
                   ``failed-over``, ``resyncing``, ``failing-back``
``generation``     the disk generation id this host holds (hex, 16 digits)
``last-checkpoint`` time of the last committed checkpoint, epoch seconds
                   with 3 decimals (``1795512345.125``)
``lag``            checkpoint lag in milliseconds (an integer)
=================  ==========================================================

A key may be absent (e.g. no checkpoint yet); :func:`read_status` returns
None for it.  Only the domain's own directory is touched, so xend's and
libxl's keys beside it stay as they are.
"""
from __future__ import absolute_import, division, print_function

import collections
import re

from xen_remus_ext.compat import integer_types
from xen_remus_ext.errors import ValidationError, XenStoreError
from xen_remus_ext.ports import run_transaction

ROLES = ("primary", "backup", "unprotected")
KEYS = ("role", "state", "generation", "last-checkpoint", "lag")
_STATE = re.compile(r"^[a-z][a-z0-9-]*$")
_GEN = re.compile(r"^[0-9a-f]{1,16}$")


class RemusStatus(collections.namedtuple("RemusStatus", "domid role state generation last_checkpoint lag")):
    """What ``remus-status`` shows for one domain; absent keys are None."""

    __slots__ = ()

    def to_dict(self):
        return dict(self._asdict())


def status_path(domid):
    if not isinstance(domid, integer_types) or domid < 0:
        raise ValidationError("domid: expected an int >= 0, got %r" % (domid,))
    return "/local/domain/%d/remus-ext" % domid


def format_status(role=None, state=None, generation=None, last_checkpoint=None, lag=None):
    """:returns: dict key -> xenstore value for the fields given (not None)."""
    out = {}
    if role is not None:
        if role not in ROLES:
            raise ValidationError("remus-ext role: expected one of %s, got %r" % (", ".join(ROLES), role))
        out["role"] = role
    if state is not None:
        if not _STATE.match(state):
            raise ValidationError("remus-ext state: expected a lower-case word, got %r" % (state,))
        out["state"] = state
    if generation is not None:
        gen = generation if not isinstance(generation, integer_types) else "%016x" % generation
        if not _GEN.match(gen):
            raise ValidationError("remus-ext generation: expected hex (up to 16 digits), got %r" % (generation,))
        out["generation"] = gen
    if last_checkpoint is not None:
        out["last-checkpoint"] = "%.3f" % float(last_checkpoint)
    if lag is not None:
        if float(lag) < 0:
            raise ValidationError("remus-ext lag: expected >= 0 ms, got %r" % (lag,))
        out["lag"] = "%d" % int(round(float(lag)))
    return out


def parse_status(domid, values):
    """``values``: dict key -> text (missing keys absent) -> :class:`RemusStatus`."""
    def num(key, conv):
        raw = values.get(key)
        if raw in (None, ""):
            return None
        try:
            return conv(raw)
        except ValueError:
            raise XenStoreError("%s/%s: expected a number, got %r" % (status_path(domid), key, raw))
    return RemusStatus(domid, values.get("role") or None, values.get("state") or None,
                       values.get("generation") or None, num("last-checkpoint", float), num("lag", int))


def write_status(store, domid, **fields):
    """Write the given fields (see :func:`format_status`) in one transaction."""
    values = format_status(**fields)
    base = status_path(domid)

    def body(tx):
        for key in KEYS:
            if key in values:
                tx.write("%s/%s" % (base, key), values[key])
    run_transaction(store, body)
    return values


def read_status(store, domid):
    """:returns: :class:`RemusStatus`, or None when the domain has no remus-ext keys."""
    base = status_path(domid)
    if not store.exists(base):
        return None
    values = {}
    for key in store.list(base):
        if key in KEYS:
            values[key] = store.read("%s/%s" % (base, key), "")
    return parse_status(domid, values)


def clear_status(store, domid):
    store.delete(status_path(domid))
