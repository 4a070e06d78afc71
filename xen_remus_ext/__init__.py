"""xen-remus-ext: Remus failback, resync and re-protect for the Xen toolstack."""
__version__ = "0.1.0"
