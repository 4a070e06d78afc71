"""Small text helpers shared by the config parsers."""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.compat import binary_type, text_type

#: characters of a value a message shows at most
MESSAGE_LIMIT = 120


class _Full(Exception):
    pass


def q(value, limit=MESSAGE_LIMIT):
    """``repr`` of a value as Python 3 writes it (no ``u`` prefix on 2.7),
    so that messages read the same on both interpreters.

    At most about ``limit`` characters: a longer value is cut and says
    how long it is, so that a message never carries a whole huge value
    (a list that holds itself shows ``[...]`` as ``repr`` does)."""
    out = []
    room = [limit]
    active = set()

    def put(text):
        if len(text) > room[0]:
            out.append(text[:max(room[0], 0)])
            raise _Full()
        out.append(text)
        room[0] -= len(text)

    def one(v):
        if isinstance(v, binary_type) and not isinstance(v, str):
            v = v.decode("utf-8", "replace")
        if isinstance(v, text_type):
            head = v[:room[0] + 1]
            r = repr(head)
            r = r[1:] if r.startswith("u") else r
            if len(head) < len(v):
                out.append(r[:-1][:max(room[0], 1)])
                out.append(u"... (%d characters)" % len(v))
                raise _Full(True)
            put(r)
        elif isinstance(v, (list, tuple)):
            if id(v) in active:
                put(u"[...]" if isinstance(v, list) else u"(...)")
                return
            active.add(id(v))
            put(u"[" if isinstance(v, list) else u"(")
            for i, x in enumerate(v):
                if i:
                    put(u", ")
                one(x)
            if isinstance(v, tuple) and len(v) == 1:
                put(u",")
            put(u"]" if isinstance(v, list) else u")")
            active.discard(id(v))
        else:
            put(text_type(repr(v)) if not isinstance(v, dict) else _dict_repr(v, room[0]))

    try:
        one(value)
    except _Full as full:
        if not full.args:
            out.append(u"...")
    return str(u"".join(out))  # ASCII on 2.7 (repr escapes), so str() is safe there


def _dict_repr(d, room):
    parts = []
    size = 2
    for k, v in d.items():
        part = u"%s: %s" % (q(k, room), q(v, room))
        parts.append(part)
        size += len(part) + 2
        if size > room:
            break
    return u"{%s}" % u", ".join(parts)
