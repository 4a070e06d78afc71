"""``xen-remus sim host CONFIG``: a config file that is not the one the sim
cluster writes is refused by name, never with a traceback."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext.cli import main as cli


@pytest.mark.parametrize("data, needle", [
    (b'name = "guest1"\n', "expected the JSON sim host config the sim cluster writes"),
    (b"\xff\xfe{}", "expected the JSON sim host config the sim cluster writes"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'{"name": "A"}', "missing root, xenstored, agent, addr, reloc_port, remus_port, resync_port"),
])
def test_a_bad_host_config_is_refused_by_name(tmp_path, capfd, data, needle):
    path = str(tmp_path / "host.json")
    with open(path, "wb") as f:
        f.write(data)
    assert cli.main(["sim", "host", path]) == 1
    err = capfd.readouterr().err
    assert "sim host: %s:0: error: " % path in err and needle in err and "Traceback" not in err


def test_a_missing_host_config_is_refused_by_name(tmp_path, capfd):
    path = str(tmp_path / "absent.json")
    assert cli.main(["sim", "host", path]) == 1
    err = capfd.readouterr().err
    assert "%s:0: error: cannot read the sim host config" % path in err and "Traceback" not in err
