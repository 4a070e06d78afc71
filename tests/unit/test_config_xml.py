"""config.xenapi_xml: Xen-API XML configs (create.dtd, Xen 4.1).

xm cannot run here; the golden file follows create.dtd's elements and
attributes and the unit conversions of xenapi_create.py as docs/xen-facts.md
section 3 gives them (memory in bytes, vbd mode RW/RO, uname in vdi/@src).
"""
from __future__ import absolute_import, division, print_function

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext import config
from xen_remus_ext.config import xenapi_xml
from xen_remus_ext.errors import ConfigError
from xen_remus_ext.model import RemusSpec

GOLDEN = os.path.join(os.path.dirname(__file__), os.pardir, "data", "xml", "hvmdomu.xml")

VM_ATTRS = ('is_a_template="false" auto_power_on="false" s3_integrity="0" vcpus_max="2" '
            'vcpus_at_startup="2" pool_name="Pool-0" actions_after_shutdown="destroy" '
            'actions_after_reboot="restart" actions_after_crash="restart" PCI_bus="" superpages="0"')


def doc(vm_body, vdis=u""):
    return (u'<xm><vm %s><name><label>g</label><description/></name><version>1</version>%s</vm>%s</xm>'
            % (VM_ATTRS, vm_body, vdis))


def test_golden_hvm():
    cfg = config.load(GOLDEN)
    assert cfg.format == "xml"
    assert (cfg.name, cfg.memory, cfg.builder, cfg.vcpus, cfg.kernel) == (u"hvmdomuname", 256, "hvm", 1, None)
    assert len(cfg.disks) == 1
    d = cfg.disks[0]
    assert (d.uname, d.vdev, d.mode) == (
        u"tap:remus:192.168.10.2:9000|aio:/var/lib/xen/images/hvmguest.x86-64.img", u"hda", u"w")
    assert d.remus == RemusSpec(u"192.168.10.2", 9000, u"aio", u"/var/lib/xen/images/hvmguest.x86-64.img")
    assert d.line == 46  # the <vdi> holding src
    assert cfg.vifs == (u"mac=00:16:3e:4a:19:c2",)
    assert cfg.options["device_model"] == u"/usr/lib64/xen/bin/qemu-dm"
    assert cfg.options["remus_note"] == u"backup is hypervisor2"


def test_pv_modes_and_cdrom():
    text = doc(u'<pv kernel="/boot/vmlinuz" bootloader="" ramdisk="/boot/initrd" args="ro" bootloader_args=""/>'
               u'<memory static_min="0" static_max="536870912" dynamic_min="0" dynamic_max="536870912"/>'
               u'<vbd name="a" mode="RW" vdi="v1" device="xvda" bootable="1" type="disk" qos_algorithm_type=""/>'
               u'<vbd name="b" mode="RO" vdi="v2" device="hdc" bootable="0" type="CD" qos_algorithm_type=""/>'
               u'<vbd name="c" mode="RW" vdi="v3" device="xvdb" bootable="0" type="disk" qos_algorithm_type=""/>',
               u'<vdi name="v1" src="phy:/dev/vg/a" type="system" size="0" sharable="False" read_only="False">'
               u'<name><label>a</label><description/></name></vdi>'
               u'<vdi name="v2" src="file:/iso" type="user" size="0" sharable="False" read_only="True">'
               u'<name><label>b</label><description/></name></vdi>'
               u'<vdi name="v3" src="phy:/dev/vg/shared" type="user" size="0" sharable="True" read_only="False">'
               u'<name><label>c</label><description/></name></vdi>')
    cfg = config.parse_text(text)
    assert (cfg.builder, cfg.kernel, cfg.memory, cfg.vcpus) == ("linux", u"/boot/vmlinuz", 512, 2)
    assert [(d.uname, d.vdev, d.mode, d.devtype) for d in cfg.disks] == [
        (u"phy:/dev/vg/a", u"xvda", u"w", "disk"), (u"file:/iso", u"hdc", u"r", "cdrom"),
        (u"phy:/dev/vg/shared", u"xvdb", u"w!", "disk")]
    assert cfg.options["ramdisk"] == u"/boot/initrd"


@pytest.mark.parametrize("text,needle", [
    (u"<xm><vm", "XML:"),
    (u"<domain/>", "expected root element <xm>"),
    (u"<xm></xm>", "expected a <vm>"),
    (doc(u'<hvm boot_policy="BIOS order"/><memory static_min="0" static_max="1" dynamic_min="0" dynamic_max="1"/>'
         u'<vbd name="a" mode="RW" vdi="nope" device="hda" bootable="1" type="disk" qos_algorithm_type=""/>'),
     "expected a <vdi name='nope'>"),
    (doc(u'<memory static_min="0" static_max="1" dynamic_min="0" dynamic_max="x"/>'), "expected a <pv> or <hvm>"),
    (doc(u'<hvm boot_policy=""/><memory static_min="0" static_max="1" dynamic_min="0" dynamic_max="x"/>'),
     "expected an integer"),
])
def test_errors(text, needle):
    with pytest.raises(ConfigError) as exc:
        config.parse_text(text, path="d.xml", fmt="xml")
    assert needle in exc.value.reason
    assert exc.value.path == "d.xml"


def test_no_entity_expansion():
    text = (u'<?xml version="1.0"?><!DOCTYPE xm [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            + doc(u'<hvm boot_policy=""/><memory static_min="0" static_max="0" dynamic_min="0" dynamic_max="0"/>')
            .replace(u"<label>g</label>", u"<label>&e;</label>"))
    cfg = config.parse_text(text, fmt="xml")
    assert not cfg.name or u"root:" not in cfg.name


def test_dtd_validation_when_dtd_exists(tmp_path):
    dtd = tmp_path / "create.dtd"
    dtd.write_text(u'<!ELEMENT xm (vm*)><!ELEMENT vm EMPTY><!ATTLIST vm only CDATA #REQUIRED>')
    root = xenapi_xml.parse_tree(u"<xm><vm/></xm>")
    problems = xenapi_xml.validate_dtd(root, dtd_path=str(dtd))
    assert problems and "only" in problems[0][1]
    assert xenapi_xml.validate_dtd(root, dtd_path=str(tmp_path / "absent.dtd")) == []


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=u'<>/xmv ="a\'!-?&;\n', max_size=60))
def test_xml_parser_raises_only_config_error(text):
    try:
        config.parse_text(u"<" + text, fmt="xml")
    except ConfigError:
        pass
