"""register-batch: POST ``--bench-batch-size`` new identifiers per request (REST, prefix admin).

    locust -f bench/scenarios/register_batch.py --host http://127.0.0.1:8000 \
        --bench-secret SECRET --bench-batch-size 2000

A request fails unless every item's responseCode is 1.
"""

from __future__ import annotations

import orjson
from locust import task

from bench.scenarios.common import BatchUser
from bench.workload import rest_batch, value_arrays


class RegisterBatch(BatchUser):
    def on_start(self) -> None:
        super().on_start()
        self.arrays = value_arrays(self.prefix)

    @task
    def register_batch(self) -> None:
        body = rest_batch(self.new_handles(), self.arrays)
        with self.client.post("/api/handles", data=body,  # type: ignore[arg-type]
                              headers=self.write_headers, name="register-batch",
                              catch_response=True) as reply:
            if reply.status_code != 200:
                reply.failure(f"HTTP {reply.status_code}: {(reply.text or '')[:200]}")
                return
            results = orjson.loads(reply.content or b"{}").get("results") or []
            bad = [r for r in results if r.get("responseCode") != 1]
            if len(results) != self.batch_size or bad:
                reply.failure(f"{len(bad)} of {len(results)} items failed: {bad[:1]}")
