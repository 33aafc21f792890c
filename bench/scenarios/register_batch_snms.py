"""register-batch-snms: SNMS batchCreate of ``--bench-batch-size`` new identifiers per request.

    locust -f bench/scenarios/register_batch_snms.py --host http://127.0.0.1:8000 \
        --bench-snms-user bench --bench-secret PASSWORD --bench-batch-size 2000

Each user logs in once (``POST /identity/token``) and makes sure the template
the records name exists, outside locust's statistics. A request fails unless
the envelope's status is 1 and every item's msg is "success".
"""

from __future__ import annotations

import orjson
from locust import task

from bench.scenarios.common import BatchUser, post_json
from bench.workload import snms_batch, snms_template, snms_value_arrays


class RegisterBatchSnms(BatchUser):
    def on_start(self) -> None:
        super().on_start()
        o = self.environment.parsed_options
        host = self.host or ""
        login = post_json(host + "/identity/token",
                          {"username": o.bench_snms_user, "password": o.bench_secret})
        if login.get("status") != 1:
            raise RuntimeError(f"SNMS login as {o.bench_snms_user} failed: {login}")
        self.snms_headers = {"Content-Type": "application/json",
                             "Authorization": "Bearer " + login["data"]["token"]}
        # Another user may have created it first: "exists" is as good.
        made = post_json(host + "/snms/api/v5/template", snms_template(self.prefix),
                         self.snms_headers)
        if made.get("status") != 1 and "模板已存在" not in str(made.get("message")):
            raise RuntimeError(f"SNMS template not created: {made}")
        self.arrays = snms_value_arrays(self.prefix)

    @task
    def register_batch(self) -> None:
        body = snms_batch(self.new_handles(), self.arrays)
        with self.client.post("/identityv2/data/batchCreate", data=body,  # type: ignore[arg-type]
                              headers=self.snms_headers, name="register-batch-snms",
                              catch_response=True) as reply:
            doc = orjson.loads(reply.content or b"{}") if reply.status_code == 200 else {}
            if doc.get("status") != 1:
                reply.failure(f"HTTP {reply.status_code}: {(reply.text or '')[:200]}")
                return
            results = doc.get("data") or []
            bad = [r for r in results if r.get("msg") != "success"]
            if len(results) != self.batch_size or bad:
                reply.failure(f"{len(bad)} of {len(results)} items failed: {bad[:1]}")
