"""Python 2.7 / 3 shims.  The only module allowed to test the version."""
from __future__ import absolute_import, division, print_function

import errno
import os
import sys

import six

PY2 = six.PY2
text_type = six.text_type
binary_type = six.binary_type
string_types = six.string_types
integer_types = six.integer_types

if PY2:  # pragma: no cover - exercised by the 2.7 run
    FileNotFoundError = IOError
    ConnectionError = OSError
else:
    FileNotFoundError = FileNotFoundError  # novm
    ConnectionError = ConnectionError  # novm


def to_bytes(value, encoding="utf-8"):
    """Return ``value`` as bytes (text is encoded)."""
    if isinstance(value, binary_type):
        return value
    return value.encode(encoding)


def to_text(value, encoding="utf-8", errors="strict"):
    """Return ``value`` as text (bytes are decoded)."""
    if isinstance(value, text_type):
        return value
    return value.decode(encoding, errors)


def fsync_dir(path):
    """fsync the directory holding ``path`` so a rename is durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data, mode=0o600):
    """Write ``data`` (bytes) to ``path`` atomically: temp file, fsync, rename."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)          # e.g. ENOSPC: leave no temporary file behind
        except OSError:
            pass
        raise
    fsync_dir(path)


def stderr_isatty():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def pid_exists(pid):
    """Process ``pid`` exists (EPERM: it does, owned by another user)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True
