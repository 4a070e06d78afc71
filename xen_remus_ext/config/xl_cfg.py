"""xl cfg files (xl.cfg(5); libxlu's lexer and grammar, Xen 4.5).

Grammar, as libxlu implements it::

    file       := { [ IDENT '=' value ] ( NEWLINE | ';' ) } [ IDENT '=' value ]
    value      := atom | '[' {NEWLINE} [ atom {NEWLINE} { ',' {NEWLINE} atom {NEWLINE} } [','] ] ']'
    atom       := STRING | NUMBER
    IDENT      := [a-z][._0-9a-z]*
    NUMBER     := [0-9][0-9a-fx]*              (kept as text; read with base 0)
    STRING     := '...' or "..." on one line, with \\ \\' \\" \\a \\b \\f \\n \\r
                  \\t \\v, \\xHH and octal escapes
    comment    := '#' to the end of the line

Any of ``+-.():`` outside a string means the file is probably Python (an
xm cfg); xl says so, and so do we.  A later setting of the same key wins.
Values: strings and numbers are text, lists are lists of text.
"""
from __future__ import absolute_import, division, print_function

import re

from xen_remus_ext.compat import binary_type
from xen_remus_ext.config import settings as settings_mod
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError

_IDENT = re.compile(u"[a-z][._0-9a-z]*")
_NUMBER = re.compile(u"[0-9][0-9a-fx]*")
_ESC = {u'"': u'"', u"'": u"'", u"\\": u"\\", u"a": u"\x07", u"b": u"\x08", u"f": u"\x0c",
        u"n": u"\n", u"r": u"\r", u"t": u"\t", u"v": u"\x0b"}
_PYTHONISH = u"+-.():"


class _Token(object):
    __slots__ = ("kind", "value", "line", "col", "raw")

    def __init__(self, kind, value, line, col, raw=None):
        self.kind, self.value, self.line, self.col, self.raw = kind, value, line, col, raw


def _dequote(raw, path, line, col):
    out = []
    i = 1
    end = len(raw) - 1
    while i < end:
        c = raw[i]
        i += 1
        if c != u"\\":
            out.append(c)
            continue
        e = raw[i]
        i += 1
        if e in _ESC:
            out.append(_ESC[e])
        elif e == u"x":
            digits = raw[i:i + 2]
            if len(digits) < 2 or any(d not in u"0123456789abcdefABCDEF" for d in digits):
                raise ConfigError(path, line, "invalid digit after backslash hex numerical character "
                                  "escape in quoted string", column=col + i - 1)
            out.append(_unichr(int(digits, 16)))
            i += 2
        elif e in u"01234567":
            digits = e
            while len(digits) < 3 and i < end and raw[i] in u"01234567":
                digits += raw[i]
                i += 1
            out.append(_unichr(int(digits, 8) & 0xff))
        else:
            out.append(e)  # xl drops an unknown escape's backslash
    return u"".join(out)


def _unichr(n):
    return u"%c" % n


def tokenize(text, path=None):
    """:returns: list of tokens; kinds IDENT NUMBER STRING NEWLINE and the
    punctuation ``= ; , [ ]``.  :raises ConfigError: a lexical error."""
    tokens = []
    line = 1
    pos = 0
    line_start = 0
    n = len(text)
    while pos < n:
        c = text[pos]
        col = pos - line_start + 1
        if c in u" \t":
            pos += 1
        elif c == u"\n":
            tokens.append(_Token("NEWLINE", None, line, col))
            pos += 1
            line += 1
            line_start = pos
        elif c == u"#":
            while pos < n and text[pos] != u"\n":
                pos += 1
        elif c in u"=;,[]":
            tokens.append(_Token(c, c, line, col))
            pos += 1
        elif c in u"'\"":
            j = pos + 1
            while j < n and text[j] != c and text[j] != u"\n":
                j += 2 if text[j] == u"\\" and j + 1 < n and text[j + 1] != u"\n" else 1
            if j >= n or text[j] != c:
                raise ConfigError(path, line, "unterminated string (strings end on the line they start)",
                                  column=col)
            raw = text[pos:j + 1]
            tokens.append(_Token("STRING", _dequote(raw, path, line, col), line, col, raw))
            pos = j + 1
        else:
            m = _IDENT.match(text, pos) or _NUMBER.match(text, pos)
            if m:
                kind = "IDENT" if c.isalpha() else "NUMBER"
                tokens.append(_Token(kind, m.group(0), line, col, m.group(0)))
                pos = m.end()
                continue
            hint = ""
            if c in _PYTHONISH:
                hint = " (this looks like Python: an xm cfg? xl does not run Python)"
            elif c.isalpha():
                hint = " (xl keys are lower case)"
            raise ConfigError(path, line, "lexical error at %s%s" % (q(c), hint), column=col)
    tokens.append(_Token("NEWLINE", None, line, (n - line_start) + 1))
    tokens.append(_Token("EOF", None, line, (n - line_start) + 1))
    return tokens


class _Parser(object):
    def __init__(self, tokens, path):
        self.toks = tokens
        self.i = 0
        self.path = path

    def peek(self):
        return self.toks[self.i]

    def take(self):
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok, expected):
        got = {"NEWLINE": "end of line", "EOF": "end of file"}.get(tok.kind, q(tok.value))
        raise ConfigError(self.path, tok.line, "syntax error: expected %s, got %s" % (expected, got),
                          column=tok.col)

    def skip_newlines(self):
        while self.peek().kind == "NEWLINE":
            self.take()

    def atom(self):
        tok = self.take()
        if tok.kind not in ("STRING", "NUMBER"):
            self.fail(tok, "a string or a number")
        return tok

    def value(self):
        tok = self.peek()
        if tok.kind != "[":
            atom = self.atom()
            return atom.value, None
        self.take()
        self.skip_newlines()
        items, lines = [], []
        if self.peek().kind == "]":
            self.take()
            return items, lines
        while True:
            atom = self.atom()
            items.append(atom.value)
            lines.append(atom.line)
            self.skip_newlines()
            tok = self.take()
            if tok.kind == "]":
                return items, lines
            if tok.kind != ",":
                self.fail(tok, "',' or ']'")
            self.skip_newlines()
            if self.peek().kind == "]":
                self.take()
                return items, lines

    def run(self):
        options, lines, item_lines = {}, {}, {}
        while True:
            tok = self.take()
            if tok.kind == "EOF":
                break
            if tok.kind in ("NEWLINE", ";"):
                continue
            if tok.kind != "IDENT":
                self.fail(tok, "a setting name (lower case)")
            eq = self.take()
            if eq.kind != "=":
                self.fail(eq, "'=' after %s" % tok.value)
            val, item = self.value()
            options[tok.value] = val
            lines[tok.value] = tok.line
            if item is not None:
                item_lines[tok.value] = item
            else:
                item_lines.pop(tok.value, None)
            end = self.take()
            if end.kind not in ("NEWLINE", ";", "EOF"):
                self.fail(end, "end of line or ';'")
            if end.kind == "EOF":
                break
        return settings_mod.Settings(options, lines, item_lines, "xl")


def parse_settings(text, path=None):
    """:returns: :class:`settings.Settings` (``fmt`` ``xl``) of an xl cfg.
    :raises ConfigError: a lexical or syntax error, with line and column"""
    if isinstance(text, binary_type):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, text[:exc.start].count(b"\n") + 1, "expected UTF-8 text, got byte 0x%02x"
                              % bytearray(text)[exc.start])
    return _Parser(tokenize(text, path), path).run()


def parse(text, path=None):
    """:returns: the :class:`model.DomainConfig` of an xl cfg."""
    return settings_mod.domain_config(parse_settings(text, path), path)
