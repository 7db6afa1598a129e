"""The only private names of ``loopaware_persist`` the benchmarks reach, and why.

Every other module here uses the public API, as a user would. Two measurements are
defined on layers that have no public entry point by design:

* the codec table times the *record* (codec + envelope) and the envelope alone, the
  figures the README's targets are stated in. The envelope is the stored byte format;
  users reach it only through a persister or a storage, so it stays private rather than
  freezing its functions as API for the sake of a benchmark;
* the loop table has a row for the step ``restore_future`` runs on the target loop, to
  show how much of its cost is the loop hop rather than the future itself.

If either name moves, only this module changes.
"""

from __future__ import annotations

from loopaware_persist._envelope import decode_envelope, encode_envelope
from loopaware_persist._snapshot import _materialise as materialise

__all__ = ("decode_envelope", "encode_envelope", "materialise")
