# -*- coding: utf-8 -*-
"""Typographic quotes pasted from web pages into cfg files.

Blog posts (the remus-fu post's own cfg among them, docs/xen-facts.md section 8) print ``’ ‘ ′ ″ “ ”`` where
the file needs ``'`` or ``"``; Python then fails with a bare "invalid
character".  These helpers name the line, column and character and the
ASCII quote to type instead.
"""
from __future__ import absolute_import, division, print_function

import unicodedata

from xen_remus_ext.errors import ConfigError

#: typographic quote -> the ASCII quote to type instead
TYPOGRAPHIC_QUOTES = {
    u"\u2018": u"'", u"\u2019": u"'", u"\u201a": u"'", u"\u201b": u"'", u"\u2032": u"'",
    u"\u00b4": u"'",
    u"\u201c": u'"', u"\u201d": u'"', u"\u201e": u'"', u"\u201f": u'"', u"\u2033": u'"',
    u"\u00ab": u'"', u"\u00bb": u'"',
}


def _char_name(ch):
    return unicodedata.name(ch, "U+%04X" % ord(ch))


def find_typographic_quotes(text, path=None):
    """:returns: a list of :class:`ConfigError`, one per line holding a
    typographic quote (the first on the line; later ones are counted)."""
    errors = []
    for lineno, line in enumerate(text.split(u"\n"), 1):
        hits = [(col, ch) for col, ch in enumerate(line, 1) if ch in TYPOGRAPHIC_QUOTES]
        if not hits:
            continue
        col, ch = hits[0]
        more = ""
        if len(hits) > 1:
            more = " (and %d more on this line)" % (len(hits) - 1)
        ascii_q = TYPOGRAPHIC_QUOTES[ch]
        errors.append(ConfigError(
            path, lineno, u"typographic quote %s (U+%04X %s) at column %d%s: Python needs the ASCII "
            u"quote %s instead (pasted from a web page?)"
            % (ch, ord(ch), _char_name(ch), col, more, ascii_q), column=col))
    return errors


def asciify_quotes(text):
    """``text`` with every typographic quote replaced by its ASCII quote
    (same length, so lines and columns stay put)."""
    return u"".join(TYPOGRAPHIC_QUOTES.get(ch, ch) for ch in text)
