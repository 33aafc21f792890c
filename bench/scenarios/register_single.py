"""register-single: PUT one new identifier per request (REST, as the prefix admin).

    locust -f bench/scenarios/register_single.py --host http://127.0.0.1:8000 \
        --bench-secret SECRET
"""

from __future__ import annotations

from locust import task

from bench.scenarios.common import WritingUser


class RegisterSingle(WritingUser):
    @task
    def register_one(self) -> None:
        self.register("register-single")
