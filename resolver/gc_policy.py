"""The cyclic garbage collector's settings for a serving node.

A node's long-lived objects are its code and its cache, and CPython's full
collection walks all of them whenever the objects that survived since the last
one reach a quarter of the rest. A filling or churning cache of a few hundred
MiB (a cold, uniform load: every miss inserts an entry, every insert evicts
one) keeps crossing that line, and each full collection then stops the event
loop for 100-400 ms (wrk's p99 of a uniform cold load on a 1M store, 256 MiB
cache, 2026-12-06: 198-406 ms with CPython's defaults, 8 ms with these), and
costs CPU on every request.

What the node allocates per request is freed by reference counting: cache
entries hold no cycles (bytes, tuples of values), so the collector has little
to find in them. Hence:

- after start-up, one collection and ``gc.freeze()``: modules, the app and the
  routes move to the permanent generation and are never walked again;
- the youngest generation collected every ``GEN0`` allocations, not 700
  (fewer, equally cheap passes: most of what they see is already dead);
- a full collection at most every ``GEN2`` middle-generation passes, not 10:
  the cache is walked ten times less often, but cyclic garbage (tracebacks,
  closed transports) is still reclaimed. Tried on that load: (10000, 10, 1000)
  and (10000, 10, 100) left p99 at 40 ms; RSS was the same for all.
"""

from __future__ import annotations

import gc

GEN0 = 2_000
GEN1 = 10
GEN2 = 100


def settle_for_serving() -> None:
    """Call once the node is started and before it takes load: a lone node
    (``resolver.server.serve_forever``) and each worker (``resolver.workers``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
