"""Stand-in for xen.lowlevel.acm (Xen 4.1 imports it at start; no ACM policy is loaded)."""


class error(Exception):
    pass


def policy():
    return "INACTIVE"


def getpolicy(*args):
    return ("", "", 0, 0)


def relabel_domains(*args):
    return 0


def getssid(*args):
    raise error("no ACM policy")


def chgpolicy(*args):
    raise error("no ACM policy")


def getdecision(*args):
    return "PERMITTED"


def get_domain_label(*args):
    return ""
