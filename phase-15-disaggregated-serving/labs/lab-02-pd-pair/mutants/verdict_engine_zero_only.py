"""Only engine 0's samples read: on a data-parallel decode a request served by engine 1 is invisible."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def kv_verdict(before: str, after: str, prompt_tokens: int) -> str:
    if not isinstance(prompt_tokens, int) or isinstance(prompt_tokens, bool) or prompt_tokens < 1:
        raise ValueError(f"prompt_tokens must be an int >= 1, got {prompt_tokens!r}")
    old, new = parse_metrics(before), parse_metrics(after)

    def total(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float | None:
        found = [
            v
            for n, lab, v in samples
            if n == name and labels.items() <= lab.items() and lab.get("engine", "0") == "0"
        ]
        return sum(found) if found else None

    def grew(name: str, **labels: str) -> float:
        a, b = total(old, name, **labels), total(new, name, **labels)
        if a is not None and b is not None and b < a:
            raise ValueError(f"{name} {labels or ''} went down ({a} -> {b}): decode restarted in between")
        return (b or 0.0) - (a or 0.0)

    source = "vllm:prompt_tokens_by_source_total"
    external = grew(source, source="external_kv_transfer")
    cached = grew(source, source="local_cache_hit")
    local = grew(source, source="local_compute")
    failed = grew("vllm:nixl_num_failed_transfers_total")
    reads = grew("vllm:nixl_xfer_time_seconds_count")
    grew("vllm:prompt_tokens_cached_by_source_total", source="p2p")  # admission: only checked, never proof
    grew("vllm:external_prefix_cache_hits_total")
    if not any(n.startswith("vllm:nixl_") for n, _, _ in new):
        return "no_connector"
    if failed > 0:
        return "kv_load_failed"
    if local > 0:
        return "prefilled_locally"
    if external > 0 and external + cached == prompt_tokens and reads >= 1:
        return "kv_moved"
    return "inconclusive"
