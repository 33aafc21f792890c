"""mixed: Zipf resolves with a share of new registrations (``--bench-write-ratio``, 0.05).

    locust -f bench/scenarios/mixed.py --host http://127.0.0.1:8000 --bench-secret SECRET
"""

from __future__ import annotations

from locust import task

from bench.scenarios.common import WritingUser
from bench.workload import identifier, zipf_sampler


class Mixed(WritingUser):
    def on_start(self) -> None:
        super().on_start()
        o = self.environment.parsed_options
        self.write_ratio: float = o.bench_write_ratio
        self.zipf = zipf_sampler(self.preload, o.bench_zipf_s)

    @task
    def request(self) -> None:
        # One task drawing the kind, so the ratio is an option rather than fixed task weights.
        if self.rng.random() < self.write_ratio:
            self.register("mixed:register")
        else:
            self.get(identifier(self.prefix, self.zipf.sample(self.rng)), "mixed:resolve")
