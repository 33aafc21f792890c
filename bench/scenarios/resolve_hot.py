"""resolve-hot: GET preloaded identifiers with Zipf popularity (``--bench-zipf-s``).

    locust -f bench/scenarios/resolve_hot.py --host http://127.0.0.1:8000 --bench-preload N
"""

from __future__ import annotations

from locust import task

from bench.scenarios.common import BenchUser
from bench.workload import identifier, zipf_sampler


class ResolveHot(BenchUser):
    def on_start(self) -> None:
        super().on_start()
        self.zipf = zipf_sampler(self.preload, self.environment.parsed_options.bench_zipf_s)

    @task
    def resolve(self) -> None:
        self.get(identifier(self.prefix, self.zipf.sample(self.rng)), "resolve-hot")
