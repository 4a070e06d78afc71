"""Fixtures shared by the failback and protect runner tests."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext.failback import journal


@pytest.fixture
def counted_journal(monkeypatch):
    """Every journal write is also a kill point of the world in ``holder``."""
    holder = {}
    real = journal.save

    def save(rec, base=None):
        path = real(rec, base)
        if holder.get("world") is not None:
            holder["world"].effect("journal %s/%s" % (rec["state"], rec.get("step")))
        return path
    monkeypatch.setattr(journal, "save", save)
    return holder
