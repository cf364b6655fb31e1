"""Test doubles: fake vLLM prefill/decode servers that speak the P/D protocol (fakes) and the graded proxy
tests' harness (harness)."""
