"""binary-tcp: RESOLUTION over TCP (binary Handle protocol), a connection per request, Zipf.

    locust -f bench/scenarios/binary_tcp.py --host http://127.0.0.1:8000 \\
        --bench-handle-port 2641 --bench-preload N
"""

from __future__ import annotations

from locust import task

from bench.scenarios.handle_user import TcpUser
from bench.workload import identifier, zipf_sampler


class BinaryTcp(TcpUser):
    def on_start(self) -> None:
        super().on_start()
        self.zipf = zipf_sampler(self.preload, self.environment.parsed_options.bench_zipf_s)

    @task
    def resolve(self) -> None:
        self.resolution(identifier(self.prefix, self.zipf.sample(self.rng)), "binary-tcp")
