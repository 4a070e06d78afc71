"""Shared pytest set-up: markers and the temp state dir every test gets."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import tempfile

import pytest

_SESSION_STATE = []


def pytest_configure(config):
    # Session-wide defaults, so that module- and session-scoped fixtures (which
    # run before the per-test ones below) and the processes they start never
    # write /var/lib/xen-remus-ext or /var/log/xen on the machine either.
    if not os.environ.get("XEN_REMUS_STATE_DIR"):
        d = tempfile.mkdtemp(prefix="xre-test-state-")
        _SESSION_STATE.append(d)
        os.environ["XEN_REMUS_STATE_DIR"] = d
    if not os.environ.get("XEN_REMUS_RUN_DIR"):
        d = tempfile.mkdtemp(prefix="xre-test-run-")
        _SESSION_STATE.append(d)
        os.environ["XEN_REMUS_RUN_DIR"] = d
    os.environ.setdefault("XEN_REMUS_LOG", "")
    config.addinivalue_line("markers", "root: needs root (loop devices, namespaces, drop_caches)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path, monkeypatch):
    """No test touches /var/lib/xen-remus-ext, /run/xen-remus or /var/log/xen."""
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XEN_REMUS_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XEN_REMUS_LOG", "")
    yield


def pytest_unconfigure(config):
    for d in _SESSION_STATE:
        shutil.rmtree(d, ignore_errors=True)


def is_root():
    return os.geteuid() == 0
