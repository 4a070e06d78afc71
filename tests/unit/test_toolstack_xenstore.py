"""Edges of the pyxs adapter and the status key helpers that need no daemon."""
from __future__ import absolute_import, division, print_function

import errno

import pytest
from pyxs.exceptions import PyXSError

from xen_remus_ext.errors import ValidationError, XenStoreError
from xen_remus_ext import status_keys as status
from xen_remus_ext.toolstack.xenstore import PyxsXenStore, _xs_error


def test_errno_from_pyxs_error_is_kept():
    err = _xs_error("xenstore read /x", PyXSError(errno.EACCES, "Permission denied"))
    assert err.errno == errno.EACCES
    assert str(err) == "xenstore read /x: EACCES (Permission denied)"


def test_missing_socket_is_a_xenstore_error_with_errno(tmp_path):
    xs = PyxsXenStore(str(tmp_path / "absent.sock"))
    with pytest.raises(XenStoreError) as err:
        xs.read("/local")
    assert err.value.errno == errno.ENOENT
    assert "cannot connect to xenstored at %s" % (tmp_path / "absent.sock") in str(err.value)


def test_status_formatting_and_validation():
    assert status.status_path(0) == "/local/domain/0/remus-ext"
    with pytest.raises(ValidationError):
        status.status_path(-1)
    assert status.format_status(generation="00ff", lag=0) == {"generation": "00ff", "lag": "0"}
    for bad in ({"state": "Bad State"}, {"generation": "xyz"}, {"lag": -1}, {"role": "master"}):
        with pytest.raises(ValidationError):
            status.format_status(**bad)
    st = status.parse_status(3, {"role": "backup", "lag": "5"})
    assert st == status.RemusStatus(3, "backup", None, None, None, 5)
    with pytest.raises(XenStoreError):
        status.parse_status(3, {"lag": "soon"})
