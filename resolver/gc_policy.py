"""The cyclic garbage collector's settings for a serving node.

A node's long-lived objects are its code and its cache, and CPython's full
collection walks all of them whenever the objects that survived since the last
one reach a quarter of the rest. A filling or churning cache of a few hundred
MiB (a cold, uniform load: every miss inserts an entry, every insert evicts
one) keeps crossing that line, and each full collection then stops the event
loop for 100-300 ms (wrk's p99 on a 1M store, 256 MiB cache: 198-310 ms with
the defaults, 5-40 ms with this policy), and costs CPU on every request.

What the node allocates per request is freed by reference counting: cache
entries hold no cycles (bytes, tuples of values), so the collector has little
to find in them. Hence:

- after start-up, one collection and ``gc.freeze()``: modules, the app and the
  routes move to the permanent generation and are never walked again;
- young generations collected every ``GEN0`` allocations, not 700 (fewer,
  equally cheap passes: most of what they see is already dead);
- a full collection only every ``GEN2`` young-generation passes: rare, so the
  cache is walked rarely, but cyclic garbage (tracebacks, closed transports)
  is still reclaimed.
"""

from __future__ import annotations

import gc

GEN0 = 10_000
GEN1 = 10
GEN2 = 1_000


def settle_for_serving() -> None:
    """Call once the node is started and before it takes load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
