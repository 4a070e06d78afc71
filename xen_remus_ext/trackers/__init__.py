"""Dirty-extent trackers (:class:`ports.Tracker`): blktap2's ``log`` driver,
reflink + FIEMAP on XFS/Btrfs image files.  Shared helpers live here."""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.model import Extent


def merge_extents(extents):
    """Sort and coalesce overlapping or touching extents.

    :param extents: iterable of :class:`model.Extent` (or ``(offset, length)``)
    :returns: sorted, non-overlapping list of :class:`model.Extent`
    """
    out = []
    for off, length in sorted((e[0], e[1]) for e in extents if e[1] > 0):
        if out and off <= out[-1][0] + out[-1][1]:
            last_off, last_len = out[-1]
            out[-1] = (last_off, max(last_len, off + length - last_off))
        else:
            out.append((off, length))
    return [Extent(o, n) for o, n in out]
