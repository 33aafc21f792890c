"""The node's collector settings (resolver.gc_policy)."""

import json
import subprocess
import sys
from pathlib import Path


def test_serving_gc_policy_freezes_start_up_objects_and_spaces_full_collections():
    # In a child process: the policy changes process-wide settings.
    script = (
        "import gc, json\n"
        "from resolver.gc_policy import GEN0, GEN1, GEN2, settle_for_serving\n"
        "before = gc.get_freeze_count()\n"
        "settle_for_serving()\n"
        "print(json.dumps([before, gc.get_freeze_count(), gc.get_threshold(),"
        " [GEN0, GEN1, GEN2]]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    before, frozen, threshold, policy = json.loads(out.stdout)
    assert before == 0 and frozen > 1000  # what is alive now is walked no more
    assert threshold == policy and policy[0] > 700 and policy[2] > 10  # CPython's defaults
