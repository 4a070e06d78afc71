"""Shared pytest set-up: markers and the temp state dir every test gets."""
from __future__ import absolute_import, division, print_function

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "root: needs root (loop devices, namespaces, drop_caches)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """No test touches /var/lib/xen-remus-ext or /var/log/xen."""
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XEN_REMUS_LOG", "")
    yield


def is_root():
    return os.geteuid() == 0
