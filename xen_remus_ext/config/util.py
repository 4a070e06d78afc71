"""Small text helpers shared by the config parsers."""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.compat import binary_type, text_type


def q(value):
    """``repr`` of a value as Python 3 writes it (no ``u`` prefix on 2.7),
    so that messages read the same on both interpreters."""
    if isinstance(value, binary_type) and not isinstance(value, str):
        value = value.decode("utf-8", "replace")
    if isinstance(value, text_type):
        r = repr(value)
        return r[1:] if r.startswith("u") else r
    if isinstance(value, (list, tuple)):
        inner = ", ".join(q(v) for v in value)
        return "[%s]" % inner if isinstance(value, list) else "(%s%s)" % (inner, "," if len(value) == 1 else "")
    return repr(value)
