"""From the settings a cfg file makes to a :class:`model.DomainConfig`.

xm and xl cfg files both end as ``name -> value`` settings (xm: the
str/list/int/float locals, docs/xen-facts.md section 2; xl: ``key = value``).
This module holds that common shape and the step to the model, with the
rules xm applies (create.py): ``disk`` and ``vif`` are lists of strings,
``memory`` MiB, ``builder`` ``linux`` (default) or ``hvm``.
"""
from __future__ import absolute_import, division, print_function

import collections

from xen_remus_ext import model
from xen_remus_ext.compat import integer_types, string_types
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError, ValidationError

#: settings the model holds in its own fields
MODEL_KEYS = ("name", "memory", "builder", "kernel", "vcpus", "vif", "disk")


class Settings(collections.namedtuple("Settings", "options lines item_lines fmt")):
    """``options``: name -> value; ``lines``: name -> line of the (last)
    assignment; ``item_lines``: name -> list of the line of each element
    when the value is a list; ``fmt``: ``xm`` or ``xl``."""

    __slots__ = ()

    def line_of(self, key, index=None):
        if index is not None:
            items = self.item_lines.get(key) or []
            if index < len(items) and items[index]:
                return items[index]
        return self.lines.get(key)


def _int_setting(settings, key, path, default):
    val = settings.options.get(key)
    line = settings.line_of(key)
    if val is None:
        return default
    if isinstance(val, bool):
        raise ConfigError(path, line, "%s: expected an integer, got %s" % (key, q(val)))
    if isinstance(val, integer_types):
        return int(val)
    if isinstance(val, float) and val.is_integer():   # False for inf and nan
        return int(val)
    if isinstance(val, string_types):
        text = val.strip()
        try:
            if settings.fmt != "xl":
                return int(text)
            if len(text) > 1 and text.startswith("0") and text.isdigit():
                return int(text, 8)  # xl reads numbers with strtoul(..., 0)
            return int(text, 0)
        except ValueError:
            pass
    raise ConfigError(path, line, "%s: expected an integer, got %s" % (key, q(val)))


def disk_entries(settings, path):
    """:returns: list of ``(text, line)`` for the ``disk`` setting.

    :raises ConfigError: ``disk`` is not a list of strings
    """
    val = settings.options.get("disk")
    if val is None:
        return []
    line = settings.line_of("disk")
    if isinstance(val, string_types):
        raise ConfigError(path, line, "disk: expected a list of strings like ['UNAME,VDEV,MODE'], got "
                          "a single string %s (xm would split it character by character)" % q(val))
    if not isinstance(val, (list, tuple)):
        raise ConfigError(path, line, "disk: expected a list of strings, got %s" % q(val))
    out = []
    for i, item in enumerate(val):
        if not isinstance(item, string_types):
            raise ConfigError(path, settings.line_of("disk", i),
                              "disk[%d]: expected a string 'UNAME,VDEV,MODE', got %s" % (i, q(item)))
        out.append((item, settings.line_of("disk", i)))
    return out


def parse_disk_entry(settings, text, line, path):
    if settings.fmt == "xl":
        return disk_mod.parse_xl_disk_spec(text, line=line, path=path)
    return disk_mod.parse_disk_spec(text, line=line, path=path)


def builder_of(settings, path):
    val = settings.options.get("builder")
    line = settings.line_of("builder")
    if settings.fmt == "xl":
        kind = settings.options.get("type")
        if kind is not None:
            if kind in ("hvm",):
                return "hvm"
            if kind in ("pv", "pvh"):
                return "linux"
            raise ConfigError(path, settings.line_of("type"), "type: expected hvm, pv or pvh, got %s" % q(kind))
        if val is None or val == "generic":
            return "linux"
    if val is None:
        return "linux"
    if val in model.BUILDERS:
        return str(val)
    raise ConfigError(path, line, "builder: expected %s, got %s"
                      % (" or ".join(("'generic'", "'hvm'") if settings.fmt == "xl" else
                                     ("'linux'", "'hvm'")), q(val)))


def domain_config(settings, path):
    """Build the model from ``settings``.

    :raises ConfigError: a model field of the wrong type, a bad disk spec
    """
    opts = settings.options
    name = opts.get("name")
    if name is not None and not isinstance(name, string_types):
        raise ConfigError(path, settings.line_of("name"), "name: expected a string, got %s" % q(name))
    kernel = opts.get("kernel")
    if kernel is not None and not isinstance(kernel, string_types):
        raise ConfigError(path, settings.line_of("kernel"), "kernel: expected a string, got %s" % q(kernel))
    vifs = opts.get("vif", [])
    if isinstance(vifs, string_types) or not isinstance(vifs, (list, tuple)):
        raise ConfigError(path, settings.line_of("vif"), "vif: expected a list of strings, got %s" % q(vifs))
    for i, v in enumerate(vifs):
        if not isinstance(v, string_types):
            raise ConfigError(path, settings.line_of("vif", i), "vif[%d]: expected a string, got %s" % (i, q(v)))
    disks = [parse_disk_entry(settings, text, line, path) for text, line in disk_entries(settings, path)]
    others = dict((k, v) for k, v in opts.items() if k not in MODEL_KEYS)
    try:
        return model.DomainConfig(
            name=name, memory=_int_setting(settings, "memory", path, None),
            builder=builder_of(settings, path), kernel=kernel,
            vcpus=_int_setting(settings, "vcpus", path, 1), vifs=list(vifs), disks=disks,
            options=others, source=path, format=settings.fmt)
    except ValidationError as exc:
        raise ConfigError(path, None, str(exc))
