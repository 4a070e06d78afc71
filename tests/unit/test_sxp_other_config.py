"""other_config as XendConfig.to_sxp writes it (a dict shown as ((k v) ...)).

Stands in for a real ``xm list -l`` of a domain whose other_config carries
our generation key (xen_ext/xend/blktap.py puts it there at migrate step 1).
"""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.config import sxp

DOMAIN = """(domain (domid 7) (name guest) (memory 256)
  (other_config ((xen_remus_gen_xvda 0c8c191628f8ad94) (foo bar)))
  (image (linux (kernel /boot/vmlinuz)))
  (device (tap2 (uname tap2:remus:10.0.0.2:9000|aio:/img) (dev xvda) (mode w))))
"""


def test_other_config_becomes_a_dict_of_text():
    cfg = sxp.domain_config_from_sxp(DOMAIN)
    assert cfg.options["other_config"] == {"xen_remus_gen_xvda": "0c8c191628f8ad94", "foo": "bar"}
    assert cfg.disks[0].remus.port == 9000


def test_other_config_malformed_items_are_skipped_not_fatal():
    cfg = sxp.domain_config_from_sxp("(domain (domid 1) (name g) (other_config ((a b) c (d (e)))))")
    assert cfg.options["other_config"] == {"a": "b"}
