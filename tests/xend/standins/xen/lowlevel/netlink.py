"""Stand-in for xen.lowlevel.netlink: the lab runs Remus with --no-net, so no
network buffer is ever set up; opening one says why."""


class error(Exception):
    pass


class rtnl(object):
    def __init__(self, *args):
        raise error("no netlink in the xend lab (run remus with --no-net)")
