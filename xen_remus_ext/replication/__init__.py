"""Checkpoint-consistent disk replication for ``xl remus`` (Xen 4.5+).

- ``stream``: scanner of xl's migration stream, checkpoint facts (pure);
- ``wire``: frames of the relay link and the disk server's control socket (pure);
- ``epochs``: epoch rules of the backup's replica (pure);
- ``nbd``: the primary's disk served over NBD, writes captured by epoch;
- ``replica``: the backup's disk, epochs held in a spool until committed;
- ``relay``: the primary and backup relays around ``xl remus``/``xl migrate-receive``.

Design and the Xen source it rests on: docs/design/xl-disk-replication.md.
"""
