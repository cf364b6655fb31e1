"""Replicated heads judged on prefill's KV-head count (vLLM's assert reads decode's): a pair with prefill's shape unknown is missed, one with decode's unknown is flagged."""

from labkit.mutants import inherit_solution

inherit_solution(globals())


def find_hazards(prefill: ServerSpec, decode: ServerSpec) -> list[Hazard]:
    found: list[Hazard] = []

    def add(name: str, why: str) -> None:
        if name not in {h.name for h in found}:
            found.append(Hazard(name, why))

    def flags(side: ServerSpec) -> dict[str, str]:
        out: dict[str, str] = {}
        args = list(side.extra_args)
        for i, arg in enumerate(args):
            name, eq, value = arg.partition("=")
            name = FLAG_ALIASES.get(name, name)
            if not name.startswith("-"):
                continue
            if not eq:
                value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else ""
            out[name] = value
        return out

    def layout(side: ServerSpec) -> str:
        value = side.env.get("VLLM_KV_CACHE_LAYOUT") or NIXL_KV_LAYOUT
        return KV_LAYOUT_ALIASES.get(value, value)

    p, d = prefill, decode
    pf, df = flags(p), flags(d)
    hash_msg = "NIXL compatibility hash differs: both servers start healthy, the first handshake fails"
    if p.model != d.model:
        add("model_mismatch", f"{hash_msg} (model {p.model} vs {d.model}: the string is hashed)")
    pd_, dd_ = (DTYPE_ALIASES.get(x.dtype, x.dtype) for x in (p, d))
    if "auto" not in (pd_, dd_) and pd_ != dd_:
        add("dtype_mismatch", f"{hash_msg} (dtype {p.dtype} vs {d.dtype})")
    if p.kv_cache_dtype != d.kv_cache_dtype:
        add("kv_cache_dtype_mismatch", f"{hash_msg} (kv_cache_dtype {p.kv_cache_dtype} vs {d.kv_cache_dtype}, "
            "hashed as written)")  # fmt: skip
    if p.shape is not None and d.shape is not None:
        for field_, name in (
            ("num_hidden_layers", "num_layers_mismatch"),
            ("num_key_value_heads", "num_kv_heads_mismatch"),
            ("head_dim", "head_size_mismatch"),
        ):
            a, b = getattr(p.shape, field_), getattr(d.shape, field_)
            if a != b:
                add(name, f"{hash_msg} ({field_} {a} vs {b})")
    unhashed = [f for f in UNHASHED_FLAGS if pf.get(f) != df.get(f)]
    unhashed += [k for k in sorted(set(p.hf_overrides) | set(d.hf_overrides))
                 if k not in GEOMETRY_OVERRIDES and p.hf_overrides.get(k, ...) != d.hf_overrides.get(k, ...)]  # fmt: skip
    if unhashed:
        add("unhashed_setting_mismatch", f"{unhashed} differ but are neither hashed nor checked: the handshake "
            "passes and decode continues prefill's KV with another model: HTTP 200, wrong tokens")  # fmt: skip
    ptp, dtp = p.tensor_parallel_size, d.tensor_parallel_size
    divisible = max(ptp, dtp) % min(ptp, dtp) == 0
    if not divisible:
        add("tp_not_divisible", f"TP sizes {ptp} and {dtp} do not divide: the handshake rejects the pair")
    elif ptp > dtp and p.shape is not None and ptp > p.shape.num_key_value_heads:
        add("prefill_tp_replicates_kv_heads", f"prefill TP {ptp} > decode TP {dtp} and > the model's "
            f"{d.shape.num_key_value_heads} KV heads: the handshake's bare assert refuses replicated heads")  # fmt: skip
    if p.block_size != d.block_size:
        why = None
        if d.block_size % p.block_size != 0:
            why = "the handshake refuses it (decode's block must be a multiple of prefill's)"
        elif divisible and ptp > dtp:
            why = "the handshake refuses unequal blocks when prefill TP > decode TP"
        elif d.device == "cuda" and d.kv_buffer_device == "cpu":
            why = "the handshake refuses unequal blocks with a host buffer (kv_buffer_device cpu)"
        elif d.device == "cpu" and d.kv_connector_module_path not in CPU_BLOCK_FIX_MODULES:
            why = "vLLM 0.32's CPU receive path regroups the blocks wrongly: HTTP 200, wrong tokens"
        if why:
            add(
                "block_size_mismatch",
                f"block sizes {p.block_size} (prefill) vs {d.block_size} (decode): {why}",
            )
    pl, dl = layout(p), layout(d)
    permuted = pl == "LBHNC" and dl == "LBNHC" and d.kv_transfer_extra.get("enable_permute_local_kv") is True
    if pl != dl and not permuted:
        cpu = [s.name for s, lay in ((p, pl), (d, dl)) if s.device == "cpu" and lay not in CPU_KV_LAYOUTS]
        add("kv_layout_mismatch", f"KV cache layouts {pl} (prefill) vs {dl} (decode): the handshake refuses them"
            + (f"; {cpu} cannot even start (CPU attention supports only LBHNC)" if cpu else ""))  # fmt: skip
    if p.device == "cuda" and p.kv_role not in KV_PRODUCERS:
        add("kv_role_misassigned", f"prefill is {p.kv_role}: without the producer role a preempted prefill can "
            "hand off blocks its preemption freed (requires_kv_delivery)")  # fmt: skip
    if d.device == "cuda" and d.kv_role not in KV_CONSUMERS:
        add("kv_role_misassigned", f"decode is {d.kv_role}: without the consumer role freed blocks are not "
            "deferred under async scheduling and a KV load can race a write (defer_block_free)")  # fmt: skip
    for side in (p, d):
        if side.connector in REMOVED_CONNECTORS:
            new = REMOVED_CONNECTORS[side.connector]
            add("removed_connector", f"{side.name}: connector {side.connector} is gone in vLLM 0.32 "
                f"({'now ' + new if new else 'removed'}): the server refuses to start")  # fmt: skip
    pm, dm = NIXL_MODES.get(p.connector), NIXL_MODES.get(d.connector)
    if any(h.name == "removed_connector" for h in found):
        pass  # that side never starts: nothing to match
    elif (pm is None or dm is None) and p.connector != d.connector:
        add("connector_mismatch", f"connectors {p.connector} vs {d.connector}: the sides cannot talk; "
            "requests fail or silently prefill twice")  # fmt: skip
    elif pm is not None and dm is not None and pm != dm:
        add("transfer_mode_mismatch", f"NIXL {pm} vs {dm} (push/pull is in the compatibility hash): "
            "the first handshake fails")  # fmt: skip
    if _same_host(p.host, d.host):

        def listens(side: ServerSpec, fl: dict[str, str]) -> tuple[set[int], set[int]]:
            dp = fl.get("--data-parallel-size", "1")
            ranks = int(dp) if dp.isdigit() and int(dp) >= 1 else 1
            return {side.side_channel_port + i for i in range(ranks)}, {side.port}

        (psc, phttp), (dsc, dhttp) = listens(p, pf), listens(d, df)
        clash = sorted((psc & (dsc | dhttp)) | (dsc & phttp))
        if clash:
            add("side_channel_port_clash", f"both sides on {p.host} listen on port(s) {clash} (side channel = "
                "VLLM_NIXL_SIDE_CHANNEL_PORT + data-parallel rank): the second bind fails")  # fmt: skip
        if p.port == d.port:
            add("http_port_clash", f"both sides on {p.host} serve HTTP on port {p.port}: both came up on it, "
                "requests reach either process and decode handshakes with itself")  # fmt: skip
    else:
        for side in (p, d):
            if _is_loopback(side.side_channel_host):
                add("localhost_side_channel_across_hosts", f"{side.name} advertises side channel "
                    f"{side.side_channel_host} but the pair spans hosts: the peer cannot reach it, the "
                    "handshake times out")  # fmt: skip
    for side in (p, d):
        old = [k for k in DEPRECATED_KV_KEYS if k in side.kv_transfer_extra]
        if old:
            add("deprecated_kv_config_keys", f"{side.name}: 0.10-era keys {old} are unknown to vLLM 0.32's "
                "KVTransferConfig: start-up fails")  # fmt: skip
    if d.kv_load_failure_policy == "recompute":
        add("recompute_hides_failures", "decode prefills locally when a KV load fails: the client gets HTTP 200 "
            "and right tokens, so only decode's counters show it (nixl_num_failed_transfers, local_compute)")  # fmt: skip
    if p.max_model_len != d.max_model_len:
        add("max_model_len_mismatch", f"max_model_len {p.max_model_len} vs {d.max_model_len}: a prompt that "
            "fits one side only is accepted by one and refused by the other")  # fmt: skip
    return found
