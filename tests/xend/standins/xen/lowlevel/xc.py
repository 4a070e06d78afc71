"""Stand-in for xen.lowlevel.xc (the hypervisor): every call goes to the lab
host's hypervisor daemon, which keeps the domains of this host.  A method
the daemon does not know raises ``xc.Error``, so a new xend path shows up as
a clear failure instead of a silent success."""
import hvclient

try:
    text_type = unicode
except NameError:  # only ever imported by xend, under 2.7
    text_type = str

XEN_SCHEDULER_SEDF = 4
XEN_SCHEDULER_CREDIT = 5
XEN_SCHEDULER_CREDIT2 = 6
XEN_SCHEDULER_ARINC653 = 7


class Error(Exception):
    pass


error = Error


def _handle(args):
    # domain_create's handle is a list of 16 ints; JSON carries it as is
    return args


class xc(object):
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def method(*args, **kwargs):
            try:
                return _fix(hvclient.call("xc", name, list(args), kwargs))
            except hvclient.HvError as exc:
                raise Error(str(exc))
        method.__name__ = name
        return method


def _fix(value):
    """JSON gives unicode strings; xend's code compares with str and uses them as keys."""
    if isinstance(value, text_type):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_fix(v) for v in value]
    if isinstance(value, dict):
        return dict((_fix(k), _fix(v)) for k, v in value.items())
    return value
