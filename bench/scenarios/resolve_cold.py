"""resolve-cold: GET preloaded identifiers uniformly, so few repeat within a run.

    locust -f bench/scenarios/resolve_cold.py --host http://127.0.0.1:8000 --bench-preload N
"""

from __future__ import annotations

from locust import task

from bench.scenarios.common import BenchUser
from bench.workload import identifier


class ResolveCold(BenchUser):
    @task
    def resolve(self) -> None:
        self.get(identifier(self.prefix, self.rng.randrange(self.preload)), "resolve-cold")
