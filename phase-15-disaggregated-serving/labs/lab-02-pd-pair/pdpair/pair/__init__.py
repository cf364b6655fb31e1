"""The pair: a YAML spec -> two vLLM launches (spec), processes and ports (procs), running a pair or a
colocated baseline (runner), seeded weights (weights), and the CPU fixes for vLLM's NIXL connector (nixl_cpu)."""
