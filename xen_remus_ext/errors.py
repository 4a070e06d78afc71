"""The single exception hierarchy of xen_remus_ext (docs/conventions.md, errors).

Every error a user can cause is a :class:`XenRemusError`; the CLI prints its
``str()`` and exits non-zero, never a traceback.  Messages name the object,
the expected and the actual value.
"""
from __future__ import absolute_import, division, print_function


class XenRemusError(Exception):
    """Root of every error this package raises on purpose."""

    def __str__(self):
        # Python 2: a text message with non-ASCII characters (a typographic
        # quote named in a ConfigError) would make str() raise; give UTF-8.
        msg = Exception.__str__(self) if not self.args or isinstance(self.args[0], str) else self.args[0]
        return msg if isinstance(msg, str) else msg.encode("utf-8")


class ConfigError(XenRemusError):
    """A domain config (or other input file) that cannot be used.

    ``str()`` is ``FILE:LINE: error: REASON`` (``FILE:LINE:COL`` when the
    column is known), the format compilers and ``config check`` use.
    """

    def __init__(self, path, line, reason, column=None, severity="error"):
        self.path = path
        self.line = line
        self.reason = reason
        self.column = column
        self.severity = severity
        XenRemusError.__init__(self, self.format())

    def format(self):
        where = "%s:%s" % (self.path or "<input>", self.line if self.line else 0)
        if self.column:
            where += ":%d" % self.column
        return "%s: %s: %s" % (where, self.severity, self.reason)


class ValidationError(ValueError, XenRemusError):
    """A value that breaks a model invariant (as pyxs' ValidationError)."""


class ToolstackError(XenRemusError):
    """xend, xl or the simulator refused or failed an operation."""


class XenStoreError(XenRemusError):
    """A xenstore operation failed; ``errno`` keeps the xenstored error."""

    def __init__(self, message, errno=None):
        self.errno = errno
        XenRemusError.__init__(self, message)


class ResyncError(XenRemusError):
    """A disk resync could not run or complete."""


class TargetBusyError(ResyncError):
    """Another resync holds the target (e.g. a killed run's pass finishing).

    ``code`` names it in the protocol's ERROR record, so a remote receiver's
    refusal arrives at the sender as this class, not as text to match."""

    code = "busy"


class SplitBrainError(ResyncError):
    """Both copies hold writes the other never saw; a loser must be named."""


class ProtocolError(ResyncError):
    """The peer sent something the resync protocol does not allow."""


class ReplicationError(XenRemusError):
    """Checkpoint-consistent disk replication failed (stream, relay, replica)."""


class StreamFormatError(ReplicationError):
    """The migration stream a relay scans is not what Xen's specs describe;
    the message names the byte offset and the field."""


class FailbackError(XenRemusError):
    """A failback step failed; ``state`` and ``step`` say where."""

    def __init__(self, message, state=None, step=None):
        self.state = state
        self.step = step
        XenRemusError.__init__(self, message)


class JournalError(XenRemusError):
    """A journal (resync or failback) is unreadable or inconsistent."""


class ProgrammerError(XenRemusError):
    """An internal contract was broken; a bug in this package."""
