"""resolve-missing: GET identifiers under the prefix that do not exist; 404 is the success.

    locust -f bench/scenarios/resolve_missing.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

from locust import task

from bench.scenarios.common import BenchUser
from bench.workload import handle_path, missing_identifier


class ResolveMissing(BenchUser):
    @task
    def resolve(self) -> None:
        path = handle_path(missing_identifier(self.prefix, self.rng))
        with self.client.get(path, name="resolve-missing", catch_response=True) as reply:
            if reply.status_code == 404:
                reply.success()
            else:
                reply.failure(f"expected 404, got {reply.status_code}")
