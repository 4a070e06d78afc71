"""Override of xend's ``Blktap2Controller.migrate``: the in-process hook route.

docs/xen-facts.md section 4: xend calls ``migrate(deviceConfig, network, dst,
step, domName)`` on each device's controller at steps 0-3 of a migration
(``network`` True) or save (False), and ``recover_migrate`` with the same
arguments when a later step failed.  The base class runs xend-config's
``external-migration-tool``.  Where that route does not suffice (no tool
configured, or another tool already there), :func:`install` wraps both
methods of ``BlktapController`` (blktap1, which xm gives ``tap:`` disks),
which ``Blktap2Controller`` (``tap2:`` disks) inherits, so that for a
migration:

- steps 1, 2 and recover: :func:`xend.hook.apply_step`, the same code the
  tool runs (so the delta goes once even with both routes in place);
- then the original method, so a configured tool still runs.

An exception at step 2 propagates: xend's ``migrateDevices`` then recovers
every device and fails the migration, and the domain resumes here.

Nothing is written into the domain's config: ``XendCheckpoint.save`` sends
``sxpr()`` (legacy keys only), which leaves ``other_config`` out, so a
disk's generation put there would never reach the destination (seen on
the real xend 4.1.6.1 and 4.4.4); the generation travels with the disk's
own metadata instead.
"""
from __future__ import absolute_import, division, print_function

import inspect
import logging

from xen_remus_ext import log as xlog
from xen_remus_ext.xend import hook as migrate_hook

log = logging.getLogger(__name__)

_MARK = "_xen_remus_ext"
#: names of the controller classes wrapped in this process (xend.domain.remus_hooks reports them)
INSTALLED = []


def device_value(device_config, key):
    """``key``'s value in xend's device SXP (``['tap2', ['uname', U], ...]``), or None."""
    if not isinstance(device_config, (list, tuple)):
        return None
    for child in device_config[1:]:
        if isinstance(child, (list, tuple)) and len(child) >= 2 and child[0] == key:
            return child[1]
    return None


def install(controller_cls, delta_fn=None):
    """Wrap ``migrate`` and ``recover_migrate`` of ``controller_cls`` and of
    its base ``BlktapController``.  Idempotent.

    xm maps a ``tap:`` uname to device class ``tap`` (BlktapController,
    blktap1) and only ``tap2:`` to Blktap2Controller (Xen 4.1 and later), and
    Blktap2Controller inherits ``migrate``: wrapping the base covers the
    disks of both classes, so the override acts on whatever actually
    reaches xend.

    :param delta_fn: passed to :func:`xend.hook.apply_step` (default:
        ``failback.delta.final_delta_for``)
    :returns: True when something was installed now, False when it all already was
    """
    mro = inspect.getmro(controller_cls)     # xend's controllers are old-style classes on 2.7
    targets = [c for c in mro if c.__name__ == "BlktapController"]
    if "migrate" in controller_cls.__dict__ or not targets:
        targets.insert(0, controller_cls)
    done = False
    for cls in targets:
        if _install_one(cls, delta_fn):
            done = True
        if cls.__name__ not in INSTALLED:
            INSTALLED.append(cls.__name__)
    # a subclass inheriting a wrapped migrate carries the override too
    if controller_cls.__name__ not in INSTALLED and getattr(controller_cls.migrate, _MARK, False):
        INSTALLED.append(controller_cls.__name__)
    return done


def installed():
    """:returns: the controller classes whose ``migrate`` carries the override here."""
    return list(INSTALLED)


def _install_one(controller_cls, delta_fn):
    orig_migrate = controller_cls.migrate
    if getattr(orig_migrate, _MARK, False):
        return False
    orig_recover = controller_cls.recover_migrate

    def migrate(self, deviceConfig, network, dst, step, domName=""):
        if network and domName:
            call = migrate_hook.HookCall(self.deviceClass, step, dst, domName)
            if migrate_hook.plan_step(call) != migrate_hook.NOTHING:
                xlog.setup()  # /var/log/xen/remus-ext.log; xend's own log is not ours
            report = migrate_hook.apply_step(call, delta_fn=delta_fn)
            log.info("xen-remus: %s", report)
        return orig_migrate(self, deviceConfig, network, dst, step, domName)

    def recover_migrate(self, deviceConfig, network, dst, step, domName=""):
        if network and domName:
            call = migrate_hook.HookCall(self.deviceClass, step, dst, domName, recover=True)
            log.info("xen-remus: %s", migrate_hook.apply_step(call, delta_fn=delta_fn))
        return orig_recover(self, deviceConfig, network, dst, step, domName)

    setattr(migrate, _MARK, True)
    setattr(recover_migrate, _MARK, True)
    migrate.__doc__ = orig_migrate.__doc__
    controller_cls.migrate = migrate
    controller_cls.recover_migrate = recover_migrate
    return True
