"""Reading and editing xend-config.sxp (real files; xend's reading rules).

xend reads the file with its SXP parser and takes the first top-level form
of a name (docs/xen-facts.md sections 3 and 4).  The config texts below are
written for these tests in the layout of a stock file (comments, commented
defaults, quoted regexes with escaped dots).
"""
from __future__ import absolute_import, division, print_function

import io
import os
import stat

import pytest

from xen_remus_ext.cli import main as cli
from xen_remus_ext.config import sxp as config_sxp
from xen_remus_ext.errors import ConfigError, ToolstackError
from xen_remus_ext.xend import xend_config as xc

SAMPLE = u"""# -*- sh -*-
#
# Settings for this host's xend (written for the tests).
#
(logfile /var/log/xen/xend.log)
(xend-relocation-server yes)
# Port for relocation; the stock file has this line commented.
#(xend-relocation-port 8002)
(xend-relocation-port 8012)
(xend-relocation-address '')
# Space-separated regexes, matched from the start.
#(xend-relocation-hosts-allow '')
(xend-relocation-hosts-allow '^localhost$ ^h2\\\\.example\\\\.org$ ^10\\\\.0\\\\.0\\\\.')
(xen-api-server ((9363 pam '^localhost$')
                 (unix none)))
#(external-migration-tool '')
(dom0-min-mem 196)   # trailing comment
"""

TOOL = "/usr/sbin/xen-remus hook"


def write(tmp_path, text, mode=0o640):
    path = str(tmp_path / "xend-config.sxp")
    with io.open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)
    return path


def read(path):
    with io.open(path, encoding="utf-8") as fh:
        return fh.read()


def test_reads_relocation_settings():
    s = xc.parse_xend_config(SAMPLE, "x.sxp")
    assert s.relocation_port == 8012
    assert s.relocation_ssl_port == 8003  # default
    assert s.relocation_server is True
    assert s.relocation_address == ""
    assert s.hosts_allow == ("^localhost$", r"^h2\.example\.org$", r"^10\.0\.0\.")
    assert s.migration_tool == ""
    assert not s.hook_installed


def test_scanner_agrees_with_config_sxp():
    """The position-keeping form scan reads the same values as config.sxp,
    and each form's span is exactly its text."""
    forms = xc.scan_forms(SAMPLE)
    ours = [[f.name] + list(f.values) for f in forms]
    assert all(SAMPLE[f.start] == "(" and SAMPLE[f.end - 1] == ")" for f in forms)
    assert [config_sxp.parse(SAMPLE[f.start:f.end])[0] for f in forms] == ours
    assert ours == config_sxp.parse(SAMPLE)
    assert len(ours) == 7


def test_stray_atoms_are_ignored_as_in_xend():
    text = u"oops (xend-relocation-port 9000) 'also'\n"
    assert xc.parse_xend_config(text).relocation_port == 9000
    new = xc.plan_install_hook(text, TOOL)
    assert new.startswith(text) and xc.parse_xend_config(new).migration_tool == TOOL


def test_first_form_wins_as_in_xend():
    s = xc.parse_xend_config(u"(xend-relocation-port 9000)\n(xend-relocation-port 9001)\n")
    assert s.relocation_port == 9000


def test_missing_file_gives_xend_defaults(tmp_path):
    s = xc.read_xend_config(str(tmp_path / "absent.sxp"))
    assert (s.relocation_port, s.hosts_allow, s.migration_tool) == (8002, (), "")


@pytest.mark.parametrize("text, needle", [
    (u"(xend-relocation-port eight)\n", "expected an int"),
    (u"(xend-relocation-server maybe)\n", "expected a boolean"),
    (u"(xend-relocation-hosts-allow '^(a$')\n", "expected regular expressions"),
    (u"(xend-relocation-port 8002\n", "the list opened here is not closed"),
    (u"(logfile 'x)\n", "in the string opened here"),
])
def test_bad_config_is_a_config_error(text, needle):
    with pytest.raises(ConfigError) as exc:
        xc.parse_xend_config(text, "bad.sxp")
    assert needle in str(exc.value) and "bad.sxp:1:" in str(exc.value)


def test_host_allowed_follows_xend():
    s = xc.parse_xend_config(SAMPLE)
    assert xc.host_allowed(s, "127.0.0.1", "localhost")
    assert xc.host_allowed(s, "10.0.0.7")
    assert xc.host_allowed(s, "192.168.1.5", "h2.example.org")
    assert not xc.host_allowed(s, "192.168.1.5", "h2xexample.org")
    assert not xc.host_allowed(s, "192.168.1.5", "evil.h2.example.org")
    assert xc.host_allowed(xc.parse_xend_config(u""), "192.168.1.5")


def test_install_keeps_text_and_uninstall_restores_it_byte_for_byte(tmp_path):
    path = write(tmp_path, SAMPLE)
    assert xc.apply_install_hook(TOOL, path) is True
    text = read(path)
    assert text.startswith(SAMPLE)  # nothing the admin wrote changed
    assert xc.read_xend_config(path).migration_tool == TOOL
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert xc.apply_install_hook(TOOL, path) is False  # idempotent
    assert xc.apply_uninstall_hook(path) is True
    assert read(path) == SAMPLE
    assert xc.apply_uninstall_hook(path) is False


def test_install_replaces_the_active_form_in_place(tmp_path):
    text = SAMPLE.replace(u"#(external-migration-tool '')", u"(external-migration-tool '')")
    path = write(tmp_path, text)
    xc.apply_install_hook(TOOL, path)
    new = read(path)
    assert new == text.replace(u"(external-migration-tool '')",
                               u"(external-migration-tool '/usr/sbin/xen-remus hook')")
    xc.apply_uninstall_hook(path)
    assert u"external-migration-tool '/usr" not in read(path)


def test_install_refuses_a_foreign_tool_without_force(tmp_path):
    text = SAMPLE + u"(external-migration-tool /usr/lib/xen/bin/site-migrate)\n"
    path = write(tmp_path, text)
    with pytest.raises(ToolstackError) as exc:
        xc.apply_install_hook(TOOL, path)
    assert "site-migrate" in str(exc.value)
    assert read(path) == text
    assert xc.apply_uninstall_hook(path) is False  # not ours: left alone
    xc.apply_install_hook(TOOL, path, force=True)
    assert xc.read_xend_config(path).migration_tool == TOOL


def test_tool_with_quotes_and_backslashes_round_trips():
    tool = "/opt/x y/xen-remus hook --note 'a\\b'"
    new = xc.plan_install_hook(u"", tool)
    assert xc.parse_xend_config(new).migration_tool == tool
    assert config_sxp.parse(new)[0][1] == tool


def test_hook_config_cli(tmp_path, capsys):
    path = write(tmp_path, SAMPLE)
    assert cli.main(["hook-config", "install", "--config", path, "--tool", TOOL]) == 0
    assert cli.main(["hook-config", "show", "--config", path]) == 0
    out = capsys.readouterr()[0]
    assert "relocation port:         8012 (ssl 8003)" in out
    assert "external-migration-tool: /usr/sbin/xen-remus hook  [xen-remus hook]" in out
    assert cli.main(["hook-config", "uninstall", "--config", path]) == 0
    assert read(path) == SAMPLE


def test_hook_config_cli_uses_env_path(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, u"(xend-relocation-port 8100)\n")
    monkeypatch.setenv("XEND_CONFIG", path)
    assert cli.main(["hook-config", "show", "--json"]) == 0
    assert '"relocation_port": 8100' in capsys.readouterr()[0]


def test_hook_config_cli_error_is_one_line(tmp_path, capsys):
    path = write(tmp_path, u"(external-migration-tool other)\n")
    assert cli.main(["hook-config", "install", "--config", path, "--tool", TOOL]) == 1
    err = capsys.readouterr()[1]
    assert err.startswith("xen-remus: ") and "Traceback" not in err and "--force" in err


def test_force_over_the_sites_tool_then_uninstall_gives_it_back(tmp_path):
    site = u"(external-migration-tool '/usr/lib/xen/bin/site-migrate --verbose')"
    text = SAMPLE + u"  " + site + u"   # ours, do not touch\n(logfile /var/log/xen/xend.log)\n"
    path = write(tmp_path, text)
    assert xc.apply_install_hook(TOOL, path, force=True) is True
    assert xc.read_xend_config(path).migration_tool == TOOL
    assert xc.apply_install_hook(TOOL, path, force=True) is False      # again: nothing changes
    assert xc.apply_install_hook(TOOL, path) is False                  # ours now: no --force needed
    assert xc.apply_uninstall_hook(path) is True
    assert read(path) == text                                          # the site's tool, byte for byte
    assert xc.read_xend_config(path).migration_tool == "/usr/lib/xen/bin/site-migrate --verbose"


def test_hook_config_missing_file_is_refused_and_not_created(tmp_path, capsys):
    missing = str(tmp_path / "typo" / "xend-config.sxp")
    for argv in (["hook-config", "install", "--config", missing, "--tool", TOOL],
                 ["hook-config", "show", "--config", missing],
                 ["hook-config", "uninstall", "--config", missing]):
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr()[1]
        assert "no such file" in err and missing in err and "Traceback" not in err
    assert not os.path.exists(missing) and not os.path.exists(os.path.dirname(missing))


@pytest.mark.parametrize("data, needle", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL byte at offset 8"),
    (b"(xend-relocation-port 8002)\n\xff\xfe(logfile x)\n", "undecodable bytes at offset 28"),
])
def test_hook_config_binary_file_is_refused(tmp_path, capsys, data, needle):
    path = str(tmp_path / "xend-config.sxp")
    with open(path, "wb") as f:
        f.write(data)
    for action in ("install", "show", "uninstall"):
        assert cli.main(["hook-config", action, "--config", path, "--tool", TOOL]) == 1
        err = capsys.readouterr()[1]
        assert needle in err and path in err and "Traceback" not in err
    with open(path, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("text, line", [
    (u'name = "guest1"\nmemory = 512\ndisk = [ "tap2:remus:192.0.2.2:9000|aio:/srv/g.img,xvda,w" ]\n', 1),
    (u"root:x:0:0:root:/root:/bin/bash\nsecretword\n", 1),
    (u"# xend\n(xend-relocation-port 8002)\n\n(logfile\n x)\nstray  # after the forms\n", 6),
])
def test_install_and_uninstall_refuse_a_file_that_is_not_xend_config(tmp_path, capsys, text, line):
    """A domain cfg (or any text) given to --config by mistake is left byte for byte, and its text is not
    repeated in the message."""
    path = write(tmp_path, text)
    for action in ("install", "uninstall"):
        assert cli.main(["hook-config", action, "--config", path, "--tool", TOOL]) == 1
        err = capsys.readouterr()[1]
        assert "%s:%d: expected xend's config" % (path, line) in err and "left unchanged" in err
        assert "root:x" not in err and "secretword" not in err and "stray" not in err
        assert read(path) == text
