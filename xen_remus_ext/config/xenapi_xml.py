"""Xen-API XML domain configs (``xm create`` of an XML file).

Follows ``tools/python/xen/xm/create.dtd`` and ``xenapi_create.py``
(Xen 4.1.0, docs/xen-facts.md section 3): root ``<xm>`` holding ``<vm>``,
``<vdi>`` and ``<network>`` elements.  A ``<vm>`` has ``<name><label>``,
``<pv kernel=...>`` or ``<hvm boot_policy=...>``, ``<memory
dynamic_max=...>`` in BYTES, ``<vbd device mode=RW|RO vdi=IDREF
type=disk|CD>`` and ``<vif mac=...>``; the disk uname is the ``src`` of
the ``<vdi name=ID>`` the vbd points to.  Mode ``RW`` on a sharable vdi is
xm's ``w!`` (xenapi_create maps ``^w!?$`` to RW and ``w!`` to sharable).

Parsing uses lxml without network access or entity expansion; the file is
DTD-validated when ``/usr/share/xen/create.dtd`` exists (as xm does).
"""
from __future__ import absolute_import, division, print_function

import os

from xen_remus_ext import model
from xen_remus_ext.compat import text_type
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config.util import q
from xen_remus_ext.errors import ConfigError, ValidationError

try:
    from lxml import etree
except ImportError:  # pragma: no cover - lxml is a dependency
    etree = None

#: where xm finds the DTD (SHAREDIR/xen/create.dtd)
DTD_PATH = "/usr/share/xen/create.dtd"
MiB = 1024 * 1024


def _parser():
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           remove_comments=False, huge_tree=False)


def parse_tree(data, path=None):
    """:returns: the lxml root of ``data`` (bytes or text).
    :raises ConfigError: not well-formed XML, naming line and column"""
    if etree is None:  # pragma: no cover
        raise ConfigError(path, None, "Xen-API XML needs lxml, which is not installed")
    if isinstance(data, text_type):
        data = data.encode("utf-8")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        line, col = (exc.position if getattr(exc, "position", None) else (exc.lineno, None))
        raise ConfigError(path, line, "XML: %s" % (exc.msg or exc,), column=col or None)
    except ValueError as exc:
        raise ConfigError(path, None, "XML: %s" % (exc,))
    if root is None:
        raise ConfigError(path, None, "XML: empty document")
    return root


def validate_dtd(root, path=None, dtd_path=DTD_PATH):
    """Validate against create.dtd when it exists.

    :returns: list of ``(line, message)`` problems ([] when valid or when
        the DTD is absent or cannot be loaded offline)
    """
    if not os.path.exists(dtd_path):
        return []
    try:
        dtd = etree.DTD(dtd_path)
    except (etree.DTDParseError, IOError, OSError) as exc:
        return [(None, "cannot load %s to validate: %s" % (dtd_path, exc))]
    if dtd.validate(root):
        return []
    return [(e.line, "DTD %s: %s" % (dtd_path, e.message)) for e in dtd.error_log.filter_from_errors()]


def _attr(el, name, path, required=True):
    val = el.get(name)
    if val is None and required:
        raise ConfigError(path, el.sourceline, "<%s>: expected attribute %s, found none" % (el.tag, name))
    return val


def _int_attr(el, name, path, default=None):
    val = el.get(name)
    if val is None:
        return default
    try:
        return int(val)
    except ValueError:
        raise ConfigError(path, el.sourceline, "<%s %s=...>: expected an integer, got %s" % (el.tag, name, q(val)))


def _label(vm):
    label = vm.find("name/label")
    return label.text if label is not None and label.text is not None else None


def _attr_line(el, name, lines):
    """libxml2 gives the line where a start tag ENDS; walk back to the line
    that holds ``name=`` so diagnostics point at the attribute."""
    line = el.sourceline
    if not lines or not line:
        return line
    needle = u"%s=" % name
    for i in range(min(line, len(lines)), 0, -1):
        if needle in lines[i - 1]:
            return i
        if u"<%s" % el.tag in lines[i - 1]:
            break
    return line


def domain_config_from_tree(root, path=None, vm_name=None, lines=None):
    """:returns: the :class:`model.DomainConfig` of the first (or the named)
    ``<vm>``.  :raises ConfigError: not an ``<xm>`` document, no such vm,
    a vbd naming an unknown vdi, a bad attribute"""
    if root.tag != "xm":
        raise ConfigError(path, root.sourceline, "XML: expected root element <xm>, got <%s>" % (root.tag,))
    vms = root.findall("vm")
    if vm_name is not None:
        vms = [v for v in vms if _label(v) == vm_name]
    if not vms:
        raise ConfigError(path, root.sourceline, "XML: expected a <vm>%s, found none"
                          % (" named %s" % q(vm_name) if vm_name else ""))
    vm = vms[0]
    vdis = dict((v.get("name"), v) for v in root.findall("vdi"))
    options = dict((k, text_type(v)) for k, v in vm.attrib.items())
    for oc in vm.findall("other_config") + vm.findall("platform"):
        if oc.get("key") is not None:
            options[oc.get("key")] = oc.get("value")
    if vm.find("hvm") is not None:
        builder, kernel = "hvm", None
        for bp in vm.findall("hvm/boot_param"):
            options[bp.get("key")] = bp.get("value")
    elif vm.find("pv") is not None:
        pv = vm.find("pv")
        builder, kernel = "linux", pv.get("kernel") or None
        for key in ("ramdisk", "args", "bootloader", "bootloader_args"):
            if pv.get(key):
                options[key] = pv.get(key)
    else:
        raise ConfigError(path, vm.sourceline, "<vm>: expected a <pv> or <hvm> child, found neither")
    memory = None
    mem = vm.find("memory")
    if mem is not None:
        nbytes = _int_attr(mem, "dynamic_max", path)
        if nbytes is None:
            nbytes = _int_attr(mem, "static_max", path)
        if nbytes is not None:
            memory = nbytes // MiB
    disks = []
    for vbd in vm.findall("vbd"):
        ref = _attr(vbd, "vdi", path)
        vdi = vdis.get(ref)
        if vdi is None:
            raise ConfigError(path, vbd.sourceline, "<vbd vdi=%s>: expected a <vdi name=%s>, found none"
                              % (q(ref), q(ref)))
        uname = _attr(vdi, "src", path)
        mode_attr = _attr(vbd, "mode", path)
        if mode_attr == "RW":
            mode = "w!" if (vdi.get("sharable") or "").lower() == "true" else "w"
        elif mode_attr == "RO":
            mode = "r"
        else:
            raise ConfigError(path, vbd.sourceline, "<vbd mode=...>: expected RW or RO, got %s" % q(mode_attr))
        vdev, devtype = disk_mod.split_devtype(_attr(vbd, "device", path))
        if vbd.get("type") == "CD":
            devtype = "cdrom"
        disks.append(model.DiskSpec(uname, vdev, mode, remus=disk_mod.parse_remus_uname(uname),
                                    line=_attr_line(vdi, "src", lines), devtype=devtype))
    vifs = []
    for vif in vm.findall("vif"):
        parts = []
        if vif.get("mac"):
            parts.append("mac=%s" % vif.get("mac"))
        if vif.get("network"):
            parts.append("bridge=%s" % vif.get("network"))
        vifs.append(text_type(",".join(parts)))
    try:
        return model.DomainConfig(name=_label(vm), memory=memory, builder=builder, kernel=kernel,
                                  vcpus=_int_attr(vm, "vcpus_at_startup", path, 1), vifs=vifs, disks=disks,
                                  options=options, source=path, format="xml")
    except ValidationError as exc:
        raise ConfigError(path, vm.sourceline, str(exc))


def parse(data, path=None, vm_name=None):
    """:returns: the :class:`model.DomainConfig` of a Xen-API XML file."""
    root = parse_tree(data, path)
    problems = validate_dtd(root, path)
    for line, msg in problems:
        if not msg.startswith("cannot load"):
            raise ConfigError(path, line, msg)
    text = data.decode("utf-8", "replace") if not isinstance(data, text_type) else data
    return domain_config_from_tree(root, path, vm_name, lines=text.split(u"\n"))
