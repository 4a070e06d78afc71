"""Top-level SXP forms of a config file, with their positions in the text.

Editing xend-config.sxp without losing the admin's comments needs to know
where each form starts and ends, which a parse-to-lists reader does not
keep.  This scanner follows xend's SXP lexical rules (xen-facts.md section
3): lists in ``( )``, atoms end at whitespace, ``#`` (comment to end of line)
or a separator ``{}()<>[];``, strings in ``"`` or ``'`` with C escapes
(``\\n``, ``\\xHH``, octal).  Values are text; nested lists are lists.
Pure: no I/O.
"""
from __future__ import absolute_import, division, print_function

import collections

from xen_remus_ext.errors import ConfigError

SEPARATORS = "{}()<>[];"
SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v",
                  "a": "\a", "\\": "\\", "'": "'", '"': '"'}


class Form(collections.namedtuple("Form", "name values start end line")):
    """One top-level ``(name value ...)``: ``text[start:end]`` is the form."""

    __slots__ = ()


class _Scanner(object):
    def __init__(self, text, path):
        self.text = text
        self.path = path
        self.pos = 0

    def line(self, pos=None):
        return self.text.count("\n", 0, self.pos if pos is None else pos) + 1

    def fail(self, reason, pos=None):
        raise ConfigError(self.path, self.line(pos), reason)

    def skip_blank(self):
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif ch == "#":
                nl = text.find("\n", self.pos)
                self.pos = n if nl < 0 else nl + 1
            else:
                return

    def string(self):
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        out = []
        text, n = self.text, len(self.text)
        while True:
            if self.pos >= n:
                self.fail("unterminated string: expected %s, got end of file" % quote, start)
            ch = text[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(out)
            if ch == "\\":
                self.pos += 1
                if self.pos >= n:
                    self.fail("string escape: expected a character, got end of file", start)
                esc = text[self.pos]
                if esc in SIMPLE_ESCAPES:
                    out.append(SIMPLE_ESCAPES[esc])
                    self.pos += 1
                elif esc == "x":
                    digits = text[self.pos + 1:self.pos + 3]
                    try:
                        out.append(chr(int(digits, 16)))
                    except ValueError:
                        self.fail("string escape \\x: expected 2 hex digits, got %r" % digits)
                    self.pos += 3
                elif esc in "01234567":
                    end = self.pos
                    while end < n and end - self.pos < 3 and text[end] in "01234567":
                        end += 1
                    out.append(chr(int(text[self.pos:end], 8)))
                    self.pos = end
                else:
                    out.append(esc)
                    self.pos += 1
            else:
                out.append(ch)
                self.pos += 1

    def atom(self):
        start = self.pos
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch.isspace() or ch == "#" or ch in SEPARATORS or ch in "'\"":
                break
            self.pos += 1
        if self.pos == start:  # a lone separator other than ( )
            self.pos += 1
        return text[start:self.pos]

    def value(self):
        ch = self.text[self.pos]
        if ch == "(":
            return self.listing()
        if ch in "'\"":
            return self.string()
        if ch == ")":
            self.fail("unexpected ')': expected a value or '('")
        return self.atom()

    def listing(self):
        start = self.pos
        self.pos += 1
        items = []
        while True:
            self.skip_blank()
            if self.pos >= len(self.text):
                self.fail("unterminated list: expected ')', got end of file", start)
            if self.text[self.pos] == ")":
                self.pos += 1
                return items
            items.append(self.value())


def scan(text, path=None):
    """:returns: the top-level forms of ``text`` as :class:`Form` tuples
    (``name`` is None for a form that does not start with an atom).
    :raises ConfigError: unbalanced parentheses, bad strings or escapes
    """
    sc = _Scanner(text, path)
    forms = []
    while True:
        sc.skip_blank()
        if sc.pos >= len(text):
            return forms
        start = sc.pos
        if text[start] == ")":
            sc.fail("top level: unexpected ')': expected '(' or an atom")
        if text[start] != "(":
            sc.value()  # a stray atom or string: xend ignores it, and so do we
            continue
        items = sc.listing()
        name = items[0] if items and not isinstance(items[0], list) else None
        forms.append(Form(name, items[1:], start, sc.pos, sc.line(start)))


def parse(text, path=None):
    """:returns: the top-level forms as lists (``[name, value, ...]``)."""
    return [[f.name] + list(f.values) for f in scan(text, path)]
