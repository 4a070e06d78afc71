"""S-expressions as xend reads and writes them (docs/xen-facts.md section 3).

Implements the rules of xend's ``tools/python/xen/xend/sxp.py`` (4.1.0),
rewritten from its documented behaviour:

Reading (:func:`parse`)
    * ``( ... )`` is a list; whitespace (`` \\t\\n\\v\\f\\r``) separates items;
      ``#`` starts a comment running to the end of the line.
    * a string is quoted with ``"`` or ``'`` and takes C escapes
      (``\\a \\b \\t \\n \\v \\f \\r \\\\ \\' \\"``, ``\\xHH``, octal ``\\OOO``).
    * an atom starts with any printable ASCII character and ends at whitespace,
      ``#`` or one of the separators ``{}()<>[]!;`` (each separator other
      than the parentheses is an atom of its own).  Quotes inside an atom are
      kept as characters.  Every atom is text: numbers are not converted.
    * ``)`` at top level, an unterminated list or string, or a character that
      is neither printable ASCII nor whitespace outside a string, is an error.
      Control-D (EOT) at top level ends the input, as in xend.

    Where xend's reader has bugs we follow what its writer means instead,
    so that write-then-read is the identity: hex escapes read as hex (xend
    maps ``a-f`` to 0-5), an unknown escape ``\\q`` keeps both characters
    (xend drops the ``q``), ``\\x`` without a digit is an error (xend dies
    with a NameError).  Escaped bytes are collected and decoded as UTF-8
    (Latin-1 if that fails), because xend on Python 2 writes UTF-8 bytes.

Writing (:func:`format`, xend's ``to_string``)
    * lists and tuples as ``(a b c)``, ints and floats with ``str``/``repr``;
    * a string bare when every character is an ASCII letter or digit or one
      of ``.-_:/~`` (or the string is ``@``), otherwise as Python 2's
      ``repr()`` of its UTF-8 bytes: ``'tap:remus:h:9000|aio:/img'``.
      xend writes the empty string bare (so it vanishes on reading); we
      write ``''``.

Lists of lists never leave ``config/``: :func:`domain_config_from_sxp`
turns a ``(vm ...)`` (what ``xm create`` builds, create.py ``make_config``)
or ``(domain ...)`` form (``xm list -l``, save images, XendConfig
``to_sxp``) into a :class:`model.DomainConfig`.
"""
from __future__ import absolute_import, division, print_function

import six

from xen_remus_ext import model
from xen_remus_ext.compat import binary_type, integer_types, string_types, text_type
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config import limits
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError, ValidationError

_SPACE = u" \t\n\x0b\x0c\r"
_SEPARATORS = u"{}()<>[]!;"
_QUOTES = u"\"'"
_COMMENT = u"#"
_EOT = u"\x04"
# string.printable, without relying on the locale
_PRINTABLE = frozenset(u"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                       u"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n\r\x0b\x0c")
_ESCAPES = {u"a": 0x07, u"b": 0x08, u"t": 0x09, u"n": 0x0a, u"v": 0x0b, u"f": 0x0c,
            u"r": 0x0d, u"\\": 0x5c, u"'": 0x27, u'"': 0x22}
_ATOM_CHARS = frozenset(u"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:/~")
_OCT = u"01234567"
_HEX = u"0123456789abcdefABCDEF"

#: top-level keys the model holds itself (not copied into ``options``)
_MODEL_KEYS = ("name", "memory", "vcpus", "image", "device")

#: device classes whose children describe a disk (create.py configure_disks)
DISK_CLASSES = ("vbd", "tap", "tap2")


def _as_text(text, path):
    if isinstance(text, binary_type):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, None, "SXP: expected UTF-8 text, got byte 0x%02x at offset %d"
                              % (bytearray(text)[exc.start], exc.start))
    if not isinstance(text, text_type):
        raise ConfigError(path, None, "SXP: expected text, got %s" % type(text).__name__)
    return text


def _decode_string(buf):
    data = bytes(buf)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class _Reader(object):
    """One pass over the text; positions are 1-based line and column."""

    def __init__(self, text, path, lines, spans=None):
        self.text = text
        self.path = path
        self.lines = lines
        self.spans = spans
        self.pos = 0
        self.line = 1
        self.col = 0

    def error(self, reason, line=None, col=None):
        raise ConfigError(self.path, line or self.line, reason,
                          column=col if col is not None else self.col)

    def next_char(self):
        c = self.text[self.pos]
        self.pos += 1
        if c == u"\n":
            self.line += 1
            self.col = 0
        else:
            self.col += 1
        return c

    def peek(self):
        return self.text[self.pos] if self.pos < len(self.text) else None

    def run(self):
        top = []
        stack = []  # (parent list, line, col, offset) of each open list
        cur = top
        while self.pos < len(self.text):
            c = self.peek()
            if c in _SPACE:
                self.next_char()
            elif c == _COMMENT:
                while self.pos < len(self.text) and self.text[self.pos] != u"\n":
                    self.next_char()
            elif c == u"(":
                start = self.pos
                self.next_char()
                new = []
                if self.lines is not None:
                    self.lines[id(new)] = self.line
                cur.append(new)
                stack.append((cur, self.line, self.col, start))
                cur = new
            elif c == u")":
                self.next_char()
                if not stack:
                    self.error("SXP: unexpected ')' with no list open")
                parent, _, _, start = stack.pop()
                if self.spans is not None:
                    self.spans[id(cur)] = (start, self.pos)
                cur = parent
            elif c in _QUOTES:
                self.next_char()
                cur.append(self.read_string(c))
            elif c == _EOT:
                if stack:
                    self.next_char()
                    self.error("SXP: end of text (Control-D) inside a list opened at line %d"
                               % stack[-1][1])
                break
            elif c in _PRINTABLE:
                cur.append(self.read_atom())
            else:
                self.next_char()
                self.error("SXP: invalid character U+%04X outside a string (expected printable "
                           "ASCII; quote the value)" % ord(c))
        if stack:
            _, line, col, _ = stack[-1]
            self.error("SXP: unexpected end of input: the list opened here is not closed",
                       line=line, col=col)
        return top

    def read_atom(self):
        start = self.pos
        self.next_char()
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in _SEPARATORS or c in _SPACE or c == _COMMENT:
                break
            self.next_char()
        return self.text[start:self.pos]

    def read_string(self, delim):
        line, col = self.line, self.col
        buf = bytearray()
        while True:
            if self.pos >= len(self.text):
                self.error("SXP: unexpected end of input in the string opened here",
                           line=line, col=col)
            c = self.next_char()
            if c == delim:
                return _decode_string(buf)
            if c != u"\\":
                buf.extend(c.encode("utf-8"))
                continue
            if self.pos >= len(self.text):
                self.error("SXP: unexpected end of input after '\\' in a string")
            e = self.next_char()
            if e in _ESCAPES:
                buf.append(_ESCAPES[e])
            elif e == u"x":
                digits = u""
                while len(digits) < 2 and self.peek() is not None and self.peek() in _HEX:
                    digits += self.next_char()
                if not digits:
                    self.error("SXP: '\\x' escape without a hex digit")
                buf.append(int(digits, 16))
            elif e in _OCT:
                digits = e
                while len(digits) < 3 and self.peek() is not None and self.peek() in _OCT:
                    digits += self.next_char()
                val = int(digits, 8)
                if val > 0xff:
                    self.error("SXP: octal escape \\%s: expected at most \\377, got %d"
                               % (digits, val))
                buf.append(val)
            else:
                buf.extend((u"\\" + e).encode("utf-8"))


def parse(text, path=None, lines=None, spans=None):
    """Parse every s-expression in ``text``.

    :param text: text (bytes are decoded as UTF-8)
    :param path: file name for error messages
    :param lines: optional dict filled with ``id(list) -> line`` of each
        list's ``(``; valid while the returned lists are alive
    :param spans: optional dict filled with ``id(list) -> (start, end)``,
        the offsets of each list's ``(`` and just past its ``)`` in the text
        (what an edit that keeps every other byte needs)
    :returns: list of values (lists of lists and text atoms); ``[]`` for
        empty input
    :raises ConfigError: on any syntax error, naming line and column
    """
    return _Reader(_as_text(text, path), path, lines, spans).run()


def from_string(text, path=None):
    """:returns: the first s-expression of ``text``, or None if it has none."""
    vals = parse(text, path)
    return vals[0] if vals else None


def atomp(value):
    """True when xend writes ``value`` without quotes."""
    if value == u"@":
        return True
    if not value:
        return False  # xend: bare (and lost on reading); we quote it
    for c in value:
        if c not in _ATOM_CHARS:
            return False
    return True


def _repr_bytes(data):
    """Python 2's ``repr(str)`` of ``data``, the same on 2.7 and 3."""
    data = bytearray(data)
    quote = u"'"
    if 0x27 in data and 0x22 not in data:
        quote = u'"'
    out = [quote]
    for b in data:
        ch = six.unichr(b)
        if ch == quote or ch == u"\\":
            out.append(u"\\" + ch)
        elif b == 0x09:
            out.append(u"\\t")
        elif b == 0x0a:
            out.append(u"\\n")
        elif b == 0x0d:
            out.append(u"\\r")
        elif b < 0x20 or b >= 0x7f:
            out.append(u"\\x%02x" % b)
        else:
            out.append(ch)
    out.append(quote)
    return u"".join(out)


def _format_into(value, out):
    if isinstance(value, (list, tuple)):
        out.append(u"(")
        for i, item in enumerate(value):
            if i:
                out.append(u" ")
            _format_into(item, out)
        out.append(u")")
    elif isinstance(value, bool) or isinstance(value, integer_types):
        out.append(text_type(int(value)) if not isinstance(value, bool) else text_type(value))
    elif isinstance(value, float):
        out.append(text_type(repr(value)))
    elif isinstance(value, string_types) or isinstance(value, binary_type):
        if isinstance(value, binary_type):
            data = value
            value = _decode_string(bytearray(value))
        else:
            data = value.encode("utf-8")
        out.append(value if atomp(value) else _repr_bytes(data))
    else:
        raise ValidationError("SXP value: expected list, text, int or float, got %s" % (q(value),))


def format(sxpr):  # noqa: A001 - called as sxp.format, beside sxp.parse
    """Write ``sxpr`` as xend's ``sxp.to_string`` does.

    :returns: text
    :raises ValidationError: on a value that is not list, tuple, text,
        int or float
    """
    out = []
    _format_into(sxpr, out)
    return u"".join(out)


to_string = format


# -- access helpers (private to config/) ---------------------------------

def name(sxpr):
    if isinstance(sxpr, list) and sxpr and isinstance(sxpr[0], string_types):
        return sxpr[0]
    return None


def children(sxpr, elt=None):
    kids = sxpr[1:] if isinstance(sxpr, list) else []
    if elt is None:
        return kids
    return [k for k in kids if isinstance(k, list) and k and k[0] == elt]


def child(sxpr, elt):
    found = children(sxpr, elt)
    return found[0] if found else None


def child_value(sxpr, elt, default=None):
    kid = child(sxpr, elt)
    if kid is None or len(kid) < 2:
        return default
    return kid[1]


# -- domain configs -------------------------------------------------------

def _int_value(sxpr, key, path, line, default=None):
    val = child_value(sxpr, key)
    if val is None:
        return default
    if isinstance(val, list):
        raise ConfigError(path, line, "(%s ...): expected an integer, got a list" % key)
    try:
        return int(val)
    except ValueError:
        try:
            f = float(val)
        except ValueError:
            f = None
        if f is not None and f.is_integer():   # False for inf and nan
            return int(f)
        raise ConfigError(path, line, "(%s ...): expected an integer, got %s" % (key, q(val)))


#: Xen-API dict fields: XendConfig.to_sxp writes ``dict.items()``, which
#: sxp shows as ``(other_config ((key value) ...))``; stock xend ignores
#: keys it does not know there, so small metadata (disk generations) rides in it.
_DICT_KEYS = ("other_config", "platform")


def _dict_value(items):
    """``((key value) ...)`` -> dict of text; malformed items are skipped."""
    out = {}
    for item in items:
        if _is_pair(item):
            out[item[0]] = item[1]
    return out


def _is_pair(kid):
    """``(key value)`` with a text key and an atom value."""
    return (isinstance(kid, list) and len(kid) == 2 and isinstance(kid[0], string_types)
            and not isinstance(kid[1], list))


def _vif_to_text(vif):
    parts = []
    for kid in children(vif):
        if _is_pair(kid):
            parts.append(u"%s=%s" % (kid[0], kid[1]))
    return u",".join(parts)


def _disk_from_device(dev, path, line):
    cls = dev[0]
    uname = child_value(dev, "uname")
    vdev = child_value(dev, "dev")
    mode = child_value(dev, "mode")
    for key, val in (("uname", uname), ("dev", vdev), ("mode", mode)):
        if val is not None and not isinstance(val, string_types):
            raise ConfigError(path, line, "(device (%s (%s ...))): expected text, got %s" % (cls, key, q(val)))
    if uname is None:
        raise ConfigError(path, line, "(device (%s ...)): expected a (uname ...), found none" % cls)
    vdev, devtype = disk_mod.split_devtype(vdev)  # xend appends the frontend's device type
    backend = child_value(dev, "backend")
    protocol = child_value(dev, "protocol")
    return model.DiskSpec(uname, vdev, mode, backend, protocol,
                          remus=disk_mod.parse_remus_uname(uname), line=line, devtype=devtype)


def _brief(sxpr):
    """A short description of a form that is not ``(vm ...)``: never the
    repr of the whole (a deeply nested list overflows the stack)."""
    if isinstance(sxpr, list):
        return "a list starting with a list" if sxpr and isinstance(sxpr[0], list) else "an empty list"
    return q(sxpr)[:40] if isinstance(sxpr, string_types) else type(sxpr).__name__


def domain_config_from_sxp(sxpr, path=None, lines=None):
    """Turn a ``(vm ...)`` or ``(domain ...)`` s-expression into a DomainConfig.

    ``(vm ...)`` is what ``xm create`` sends to xend; ``(domain ...)`` is
    what xend returns (``xm list -l``, ``server.xend.domain(dom, 'all')``,
    save images).  The builder is the head of ``(image (linux|hvm ...))``;
    ``memory`` is MiB in both forms; a ``dev`` of ``hda:disk`` or ``hdc:cdrom``
    (xend adds the frontend's device type) becomes ``vdev`` ``hda`` or
    ``hdc`` and ``devtype`` ``disk`` or ``cdrom``.  Every other ``(key value)`` child with an atom value, and
    the image's, goes into ``options``.

    :param sxpr: a parsed s-expression, or text holding one
    :param lines: the ``lines`` dict :func:`parse` filled, for line numbers
    :raises ConfigError: not a vm/domain form, or a value of the wrong kind
    """
    if isinstance(sxpr, string_types) or isinstance(sxpr, binary_type):
        lines = {} if lines is None else lines
        vals = parse(sxpr, path, lines)
        if not vals:
            raise ConfigError(path, 1, "SXP: expected a (vm ...) or (domain ...) form, got no expression")
        sxpr = vals[0]
    lines = lines or {}
    top_line = lines.get(id(sxpr))
    head = name(sxpr)
    if head not in ("vm", "domain"):
        raise ConfigError(path, top_line or 1, "SXP: expected a (vm ...) or (domain ...) form, got %s"
                          % ("(%s ...)" % head if head is not None else _brief(sxpr)))
    cfg_name = child_value(sxpr, "name")
    if cfg_name is not None and not isinstance(cfg_name, string_types):
        raise ConfigError(path, top_line, "(name ...): expected text, got %s" % q(cfg_name))
    memory = _int_value(sxpr, "memory", path, top_line)
    vcpus = _int_value(sxpr, "vcpus", path, top_line, default=1)
    builder = "linux"
    kernel = None
    options = {}
    image = child(sxpr, "image")
    if image is not None and len(image) > 1:
        img = image[1]
        if not isinstance(img, list) or not img:
            raise ConfigError(path, lines.get(id(image), top_line),
                              "(image ...): expected (image (linux|hvm ...)), got %s" % (q(img),))
        if img[0] not in model.BUILDERS:
            raise ConfigError(path, lines.get(id(img), top_line),
                              "(image (%s ...)): expected builder linux or hvm"
                              % (limits.cut(img[0], 80) if isinstance(img[0], string_types) else q(img[0], 80),))
        builder = img[0]
        kernel = child_value(img, "kernel") or None
        for kid in children(img):
            if _is_pair(kid):
                options[kid[0]] = kid[1]
    vifs = []
    disks = []
    for kid in children(sxpr):
        if not isinstance(kid, list) or not kid:
            continue
        if kid[0] == "device" and len(kid) > 1 and isinstance(kid[1], list) and kid[1]:
            dev = kid[1]
            line = lines.get(id(dev), lines.get(id(kid), top_line))
            if dev[0] in DISK_CLASSES:
                line = lines.get(id(child(dev, "uname")), line)
                try:
                    disks.append(_disk_from_device(dev, path, line))
                except ValidationError as exc:
                    raise ConfigError(path, line, "(device (%s ...)): %s" % (dev[0], exc))
            elif dev[0] == "vif":
                vifs.append(_vif_to_text(dev))
        elif kid[0] in _DICT_KEYS and len(kid) == 2 and isinstance(kid[1], list):
            options[kid[0]] = _dict_value(kid[1])
        elif _is_pair(kid) and kid[0] not in _MODEL_KEYS:
            options[kid[0]] = kid[1]
    try:
        return model.DomainConfig(name=cfg_name, memory=memory, builder=builder, kernel=kernel,
                                  vcpus=vcpus, vifs=vifs, disks=disks, options=options,
                                  source=path, format="sxp")
    except ValidationError as exc:
        raise ConfigError(path, top_line, str(exc))


def domain_info_from_sxp(sxpr, host=None):
    """The ``(domain (domid N) (name X) (state S) (memory M) ...)`` summary.

    :returns: :class:`model.DomainInfo`
    :raises ConfigError: not a domain form or no integer domid
    """
    if name(sxpr) != "domain":
        raise ConfigError(None, None, "SXP: expected a (domain ...) form, got %s" % (q(name(sxpr)),))
    domid = _int_value(sxpr, "domid", None, None)
    if domid is None:
        raise ConfigError(None, None, "(domain ...): expected a (domid N), found none")
    return model.DomainInfo(domid, child_value(sxpr, "name"), child_value(sxpr, "state", "") or "",
                            _int_value(sxpr, "memory", None, None, default=0), host)


def _vif_from_text(text):
    vif = ["vif"]
    for part in text.split(u","):
        if u"=" in part:
            k, v = part.split(u"=", 1)
            vif.append([k.strip(), v.strip()])
    return vif


def domain_sxp(cfg):
    """The ``(vm ...)`` list ``xm create`` would build (create.py make_config)."""
    vm = ["vm"]
    if cfg.name is not None:
        vm.append(["name", cfg.name])
    if cfg.memory is not None:
        vm.append(["memory", cfg.memory])
    if cfg.vcpus is not None:
        vm.append(["vcpus", cfg.vcpus])
    img = [cfg.builder]
    if cfg.kernel is not None:
        img.append(["kernel", cfg.kernel])
    vm.append(["image", img])
    for d in cfg.disks:
        cls = "tap2" if d.uname.startswith("tap2:") else "tap" if d.uname.startswith("tap:") else "vbd"
        dev = [cls, ["uname", d.uname]]
        if d.vdev is not None:
            dev.append(["dev", d.xm_dev])
        if d.mode is not None:
            dev.append(["mode", d.mode])
        if d.backend:
            dev.append(["backend", d.backend])
        if d.protocol:
            dev.append(["protocol", d.protocol])
        vm.append(["device", dev])
    for v in cfg.vifs:
        vm.append(["device", _vif_from_text(v if isinstance(v, string_types) else u"")])
    return vm


def format_domain_sxp(cfg):
    """:returns: ``cfg`` as ``(vm ...)`` text in xend's quoting."""
    return format(domain_sxp(cfg))
