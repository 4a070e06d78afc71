"""The block resync engine: bring a stale disk copy up to date from the good one.

Entry points (see each module's docstring):

- :mod:`.api`: ``resync()``, ``verify()``, ``serve()``, ``ResyncResult``,
  ``VerifyResult``, ``ResyncServer`` (what failback, the simulator and the
  CLI call);
- :mod:`.meta`: generation identifiers of each disk copy (split-brain rules);
- :mod:`.plan`: pure range arithmetic and the ``--dirty`` file format;
- :mod:`.protocol`, :mod:`.sender`, :mod:`.receiver`, :mod:`.transport`:
  the versioned wire protocol (docs/protocol.md) and its two ends;
- :mod:`.journal`, :mod:`.blockio`, :mod:`.digest`, :mod:`.ratelimit`: resume
  journal, positioned disk I/O, keyed digests, token bucket.
"""
