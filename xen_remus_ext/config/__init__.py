"""Domain configs in every form the toolstacks use, as one model.

:func:`load` and :func:`parse_text` read xm cfg files (Python, evaluated
safely, :mod:`.xm_cfg`), xl cfg files (:mod:`.xl_cfg`), SXP (:mod:`.sxp`)
and Xen-API XML (:mod:`.xenapi_xml`) into :class:`model.DomainConfig`.

Format detection (``fmt=None``), in this order:

* first byte ``<`` (after a UTF-8 byte order mark): Xen-API XML, as xm's
  ``load_defconfig`` decides;
* first character other than whitespace and ``#`` comment lines is ``(``:
  SXP;
* otherwise a cfg file: xl when it reads cleanly with xl's grammar AND one
  of its settings is xl-only (a ``disk`` entry with ``key=value`` or a
  format as second field, or ``type =``); xm otherwise (xm is the
  toolstack Remus disks need).
"""
from __future__ import absolute_import, division, print_function

import io

from xen_remus_ext.compat import binary_type, string_types
from xen_remus_ext.config import limits
from xen_remus_ext.errors import ConfigError

FORMATS = ("xm", "xl", "sxp", "xml")


#: the largest config file read (real ones are a few KiB)
MAX_FILE_BYTES = 4 * limits.MAX_FILE_BYTES


def _read(path):
    try:
        with io.open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (IOError, OSError) as exc:
        raise ConfigError(path, None, "cannot read the file: %s" % (exc.strerror or exc,))
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, None, "the file is larger than %d KiB: not a domain config (those are a few "
                          "KiB); not read further" % (MAX_FILE_BYTES // 1024))
    return data


def decode(data, path=None):
    """UTF-8 bytes (BOM allowed) to text; :raises ConfigError: naming the line."""
    if not isinstance(data, binary_type):
        return data
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, data[:exc.start].count(b"\n") + 1,
                          "expected UTF-8 text, got byte 0x%02x" % bytearray(data)[exc.start])


_XL_FORMATS = ("", "raw", "qcow", "qcow2", "vhd", "qed")


def _xl_only_disk(text):
    """An xl diskspec xm could not mean: ``key=value`` or a format second."""
    if not isinstance(text, string_types):
        return False
    fields = [f.strip() for f in text.split(",")]
    return any("=" in f for f in fields) or (len(fields) > 1 and fields[1] in _XL_FORMATS)


def detect_format(text, path=None):
    """:returns: one of :data:`FORMATS` for ``text`` (see the module doc).

    :param path: the file ``text`` came from, named by the error raised for
        bytes that are not UTF-8
    """
    if isinstance(text, binary_type):
        stripped = text[3:] if text.startswith(b"\xef\xbb\xbf") else text
        if stripped[:1] == b"<":
            return "xml"
        text = decode(text, path)
    if text.startswith(u"\ufeff"):
        text = text[1:]
    if text[:1] == u"<":
        return "xml"
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith(u"#"):
            continue
        if s.startswith(u"("):
            return "sxp"
        if s.startswith(u"<"):
            return "xml"
        break
    from xen_remus_ext.config import xl_cfg
    try:
        st = xl_cfg.parse_settings(text)
    except ConfigError:
        return "xm"
    disks = st.options.get("disk")
    if "type" in st.options:
        return "xl"
    if isinstance(disks, list) and any(_xl_only_disk(d) for d in disks):
        return "xl"
    return "xm"


def parse_text(text, path="<input>", fmt=None, allow_exec=False, uname=None):
    """Parse a config held in memory.

    :param text: text or bytes
    :param fmt: one of :data:`FORMATS`; None detects it
    :param allow_exec: xm only: run the file like xm does
    :param uname: xm only: what ``os.uname()`` returns
    :returns: :class:`model.DomainConfig`
    :raises ConfigError: anything wrong, with file and line
    """
    from xen_remus_ext.config import sxp, xenapi_xml, xl_cfg, xm_cfg
    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(path, None, "format: expected one of %s, got %s" % (", ".join(FORMATS), fmt))
    if fmt is None:
        fmt = detect_format(text, path)
    if fmt == "xml":
        return xenapi_xml.parse(text, path)
    text = decode(text, path)
    if text.startswith(u"\ufeff"):
        text = text[1:]
    if fmt == "sxp":
        return sxp.domain_config_from_sxp(text, path=path)
    if fmt == "xl":
        return xl_cfg.parse(text, path)
    return xm_cfg.parse(text, path, allow_exec=allow_exec, uname=uname)


def is_empty(cfg):
    """True when ``cfg`` (a :class:`model.DomainConfig`) sets nothing at all:
    an empty file, or one of comments only."""
    return (cfg.name is None and cfg.memory is None and cfg.kernel is None and not cfg.disks
            and not cfg.vifs and not cfg.options)


def load(path, fmt=None, allow_exec=False, uname=None):
    """Read and parse the config file at ``path``.

    :returns: :class:`model.DomainConfig` (``source`` = ``path``)
    :raises ConfigError: unreadable, or anything :func:`parse_text` raises
    """
    return parse_text(_read(path), path=path, fmt=fmt, allow_exec=allow_exec, uname=uname)


def read_file(path):
    """:returns: the raw bytes of ``path``; :raises ConfigError: unreadable."""
    return _read(path)
