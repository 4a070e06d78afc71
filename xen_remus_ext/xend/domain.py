"""``XendDomain.domain_remus_*``: the remus operations as xend XML-RPC methods.

docs/xen-facts.md section 1: when xend's XML-RPC server starts, every callable
attribute of ``XendDomain.instance()`` named ``domain_*`` (except
``domain_create`` and ``domain_restore``) is registered as
``xend.domain.<name without "domain_">``.  :func:`install` adds

- ``domain_remus_protect(dom, host, options=None)``  -> ``xend.domain.remus_protect``
- ``domain_remus_failback(dom, host, options=None)`` -> ``xend.domain.remus_failback``
- ``domain_remus_resync(dom, host, options=None)``   -> ``xend.domain.remus_resync``
- ``domain_remus_status(dom=None, options=None)``    -> ``xend.domain.remus_status``
- ``domain_remus_hooks()``                          -> ``xend.domain.remus_hooks``: which
  final-delta routes THIS running xend has (:func:`hooks_report`), asked
  by the failback preflight before anything moves

to the class before ``instance()`` is first called (patches/0002 calls it at
the end of XendDomain.py), so no change to the server is needed.

Each method runs the ``xen-remus`` command of the same job in a child
process (``<xend's python> -m xen_remus_ext failback ...``, toolstack xend),
not inside xend: a failback takes minutes, sleeps, logs and talks to this
same xend over XML-RPC, none of which belongs in xend's request thread.  The
result is the command's output (text); a failure raises
:class:`ToolstackError`, which xend's server turns into an XML-RPC fault
carrying the message.

``options``: a list of extra ``xen-remus`` arguments (``['--dry-run']``) or a
dict (``{'dry_run': True, 'rate': 50}`` -> ``--dry-run --rate 50``).
"""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.compat import integer_types, string_types, to_text
from xen_remus_ext.errors import ToolstackError, ValidationError
from xen_remus_ext.xm import commands as xm_commands

#: xend method name -> the xm command it mirrors
METHODS = (
    ("domain_remus_protect", "remus-protect"),
    ("domain_remus_failback", "remus-failback"),
    ("domain_remus_resync", "remus-resync"),
    ("domain_remus_status", "remus-status"),
)


def options_to_argv(options):
    """:returns: ``options`` (None, list or dict, as XML-RPC delivers them) as argv."""
    if options is None:
        return []
    if isinstance(options, (list, tuple)):
        bad = [o for o in options if not isinstance(o, string_types)]
        if bad:
            raise ValidationError("options: expected strings, got %r" % (bad,))
        return list(options)
    if isinstance(options, dict):
        argv = []
        for key in sorted(options):
            value = options[key]
            flag = "--" + str(key).lstrip("-").replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, integer_types + string_types + (float,)):
                argv += [flag, str(value)]
            else:
                raise ValidationError("option %s: expected a string, number or bool, got %r"
                                      % (key, value))
        return argv
    raise ValidationError("options: expected a list or a dict, got %r" % (options,))


class RemusMethods(object):
    """Runs the commands; one instance shared by the installed methods."""

    def __init__(self, runner=None, python=None, parser=None):
        self.runner = runner
        self.python = python or sys.executable
        self.parser = parser

    def _runner(self):
        if self.runner is None:
            from xen_remus_ext.wiring import SubprocessRunner
            self.runner = SubprocessRunner()
        return self.runner

    def argv(self, xm_name, positional, options):
        cmd = xm_commands.BY_NAME[xm_name]
        parser = self.parser or xm_commands.build_cli_parser()
        sub = xm_commands.subparser_for(parser, cmd.target)
        if sub is None:
            raise ToolstackError("xend.domain: this xen-remus-ext build has no 'xen-remus %s' "
                                 "command" % cmd.target)
        args = [str(p) for p in positional if p is not None] + options_to_argv(options)
        return [self.python, "-m", "xen_remus_ext"] + xm_commands.xen_remus_argv(cmd, args, sub)

    def run(self, xm_name, positional, options):
        argv = self.argv(xm_name, positional, options)
        rc, out, err = self._runner().run(argv)
        out = to_text(out or b"", errors="replace")
        err = to_text(err or b"", errors="replace")
        if rc != 0:
            lines = [ln for ln in err.splitlines() if ln.strip()] or \
                [ln for ln in out.splitlines() if ln.strip()]
            detail = "; ".join(ln.replace("xen-remus: ", "", 1) for ln in lines[-3:])
            raise ToolstackError("xen-remus %s: expected exit status 0, got %s: %s"
                                 % (argv[3], rc, detail or "(no output)"))
        return out


def _check_dom(dom):
    if dom is None or (isinstance(dom, string_types) and not dom.strip()):
        raise ValidationError("domain: expected a name or domid, got %r" % (dom,))
    return dom


def hooks_report(options=None, checkpoint_module=None, remus_package=None):
    """What the running xend does at device-migrate step 2, and whether it
    holds a Remus backup for promote, from inside it.

    :param options: xend's ``XendOptions.instance()`` (default: imported
        from xend, so only inside xend)
    :param checkpoint_module: xend's ``XendCheckpoint`` (default: the one
        loaded in this process, if any)
    :param remus_package: ``xen.remus`` (default: imported, if it can be)
    :returns: dict ``migration_tool`` (the external-migration-tool this xend
        read at start), ``tool_is_ours``, ``blktap_override`` (controller
        classes carrying our ``migrate`` override in this process), ``hold``
        (``{"restore": bool, "mark": bool}``: xend/hold.py)
    """
    from xen_remus_ext.xend import blktap, hold, xend_config
    if options is None:
        from xen.xend import XendOptions  # only inside xend
        options = XendOptions.instance()
    if checkpoint_module is None:
        checkpoint_module = sys.modules.get("xen.xend.XendCheckpoint")
    if remus_package is None:
        try:
            import xen.remus as remus_package   # an empty package: importing it runs nothing
        except ImportError:
            remus_package = None
    tool = options.get_external_migration_tool() or ""
    return {"migration_tool": tool, "tool_is_ours": bool(xend_config.is_our_tool(tool)),
            "blktap_override": blktap.installed(),
            "hold": hold.report(checkpoint_module, remus_package)}


def make_methods(impl):
    """:returns: dict name -> function taking ``self`` (the XendDomain)."""

    def domain_remus_protect(self, dom, host, options=None):
        """Seed ``host``'s disk copies and start Remus toward it (xm remus-protect)."""
        return impl.run("remus-protect", [_check_dom(dom), host], options)

    def domain_remus_failback(self, dom, host, options=None):
        """Fail a domain back to ``host`` and protect it again (xm remus-failback)."""
        return impl.run("remus-failback", [_check_dom(dom), host], options)

    def domain_remus_resync(self, dom, host, options=None):
        """Resync ``host``'s copy of the domain's Remus disks (xm remus-resync)."""
        return impl.run("remus-resync", [_check_dom(dom), host], options)

    def domain_remus_status(self, dom=None, options=None):
        """Remus, failback and resync state of all/one domain (xm remus-status)."""
        return impl.run("remus-status", [dom or None], options)

    def domain_remus_hooks(self):
        """Which final-delta routes this xend has (external-migration-tool, blktap override),
        and whether it holds a marked Remus backup (patches 0007/0008)."""
        return hooks_report()

    return {
        "domain_remus_hooks": domain_remus_hooks,
        "domain_remus_protect": domain_remus_protect,
        "domain_remus_failback": domain_remus_failback,
        "domain_remus_resync": domain_remus_resync,
        "domain_remus_status": domain_remus_status,
    }


def install(xend_domain_cls, runner=None, python=None, parser=None):
    """Add the ``domain_remus_*`` methods to ``XendDomain`` (the class).

    Existing attributes of the same name are left alone (a later xend that
    has its own wins).  :returns: the names added.
    """
    impl = RemusMethods(runner=runner, python=python, parser=parser)
    added = []
    for name, fn in sorted(make_methods(impl).items()):
        if hasattr(xend_domain_cls, name):
            continue
        setattr(xend_domain_cls, name, fn)
        added.append(name)
    return added
