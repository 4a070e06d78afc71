"""Pacemaker integration: the OCF resource agent for a Remus pair.

:mod:`decide` is pure (status row -> OCF exit code and promotion score,
parameter and clone checks, meta-data); :mod:`agent` performs the actions;
``/usr/lib/ocf/resource.d/xen-remus/remus`` is a shell shim running
``xen-remus ocf ACTION``.
"""
