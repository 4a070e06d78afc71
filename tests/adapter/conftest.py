"""Fixtures shared by the adapter tests."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.adapter.sshd_util import Sshd


@pytest.fixture(scope="module")
def sshd():
    """A real sshd on loopback for one test module (its tests skip without
    root and /usr/sbin/sshd through their own ``pytestmark``)."""
    s = Sshd().start()
    yield s
    s.stop()
