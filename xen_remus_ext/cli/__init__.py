"""Command-line front ends: ``xen-remus`` and the ``xm remus-*`` subcommands."""
