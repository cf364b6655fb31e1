"""The pair spec: one YAML file describes a prefill (producer) and a decode (consumer) vLLM server.

Top-level keys are shared by both sides; a ``prefill:`` or ``decode:`` block overrides any of them for
that side only (that is how a mismatched pair is made on purpose). Unknown keys are an error, as they
are in vLLM's own config. See ``pair.cpu.yaml`` for every key with a comment.

``load_pair_spec(path)`` reads it with ``yaml.safe_load`` and returns a ``PairSpec`` whose two
``ServerSpec`` are fully resolved: defaults applied, overrides merged, the model folder made absolute,
and the model's shape (layers, KV heads, head size) read from its ``config.json`` when it exists.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
SIDES = ("prefill", "decode")
DEFAULT_ROLE = {"prefill": "kv_producer", "decode": "kv_consumer"}

# keys the YAML may set at the top level (shared) or inside a side block (override)
SHARED_KEYS = {
    "model", "seed", "load_format", "skip_tokenizer_init", "dtype", "kv_cache_dtype", "block_size",
    "max_model_len", "tensor_parallel_size", "device", "connector", "kv_role", "kv_buffer_device",
    "kv_load_failure_policy", "kv_connector_extra_config", "kv_connector_module_path",
    "kv_transfer_extra", "host", "port", "side_channel_host", "side_channel_port", "cpu_cores",
    "cuda_devices", "cpu_kvcache_space_gib", "hf_overrides", "extra_args", "env", "shape",
}  # fmt: skip
TOP_ONLY_KEYS = {"proxy", "prefill", "decode", "description"}


class SpecError(ValueError):
    """The YAML pair spec is malformed (unknown key, wrong type, missing value)."""


@dataclass(frozen=True)
class ModelShape:
    """What NIXL's compatibility hash sees of the model's KV layout."""

    num_hidden_layers: int
    num_key_value_heads: int
    head_dim: int

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any]) -> ModelShape:
        heads = int(cfg["num_attention_heads"])
        return cls(
            num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_key_value_heads=int(cfg.get("num_key_value_heads", heads)),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        )


@dataclass
class ServerSpec:
    """One side of the pair, fully resolved (shared settings + this side's overrides)."""

    name: str  # "prefill" | "decode"
    model: str  # the model folder, absolute
    port: int
    host: str = "127.0.0.1"
    seed: int = 0
    load_format: str = "dummy"
    skip_tokenizer_init: bool = True
    dtype: str = "bfloat16"
    kv_cache_dtype: str = "auto"  # "auto" = the model dtype
    block_size: int = 16
    max_model_len: int = 2048
    tensor_parallel_size: int = 1
    device: str = "cpu"  # "cpu" | "cuda"
    connector: str = "NixlConnector"
    kv_role: str = "kv_producer"
    kv_buffer_device: str = "cpu"
    kv_load_failure_policy: str = "fail"
    kv_connector_extra_config: dict[str, Any] = field(default_factory=dict)
    kv_connector_module_path: str | None = None
    kv_transfer_extra: dict[str, Any] = field(default_factory=dict)  # raw extra kv-transfer-config keys
    side_channel_host: str = "localhost"  # vLLM's default; it is what prefill advertises AND binds
    side_channel_port: int = 5600
    cpu_cores: str | None = None  # CPU: VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "0-3"
    cuda_devices: str | None = None  # CUDA: CUDA_VISIBLE_DEVICES, e.g. "0,1"
    cpu_kvcache_space_gib: int | None = None  # CPU: VLLM_CPU_KVCACHE_SPACE
    hf_overrides: dict[str, Any] = field(default_factory=dict)  # --hf-overrides (e.g. num_hidden_layers)
    extra_args: list[str] = field(default_factory=list)  # appended to argv verbatim
    env: dict[str, str] = field(default_factory=dict)  # extra environment for this server
    shape: ModelShape | None = None  # from config.json + hf_overrides; None if the folder is absent

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class PairSpec:
    prefill: ServerSpec
    decode: ServerSpec
    proxy_host: str = "127.0.0.1"
    proxy_port: int = 8000
    source: str | None = None  # the YAML file it came from


@dataclass
class LaunchPlan:
    """How to start one vLLM server: an argv list (never a shell string) and the env to ADD to os.environ."""

    name: str  # "prefill" | "decode"
    argv: list[str]
    env: dict[str, str]
    url: str  # http://host:port of its OpenAI API


@dataclass(frozen=True)
class Hazard:
    """One disagreement that breaks (or hides a broken) pair."""

    name: str  # a stable identifier, e.g. "block_size_not_multiple"
    explanation: str  # one line: what vLLM would do


# --------------------------------------------------------------------------------------------- loading


def _check_types(side: str, merged: dict[str, Any]) -> None:
    ints = ("seed", "block_size", "max_model_len", "tensor_parallel_size", "port", "side_channel_port")
    for key in ints:
        if key in merged and (not isinstance(merged[key], int) or isinstance(merged[key], bool)):
            raise SpecError(f"{side}: {key} must be an integer, got {merged[key]!r}")
    for key in ("kv_connector_extra_config", "kv_transfer_extra", "hf_overrides", "env", "shape"):
        if key in merged and not isinstance(merged[key], dict):
            raise SpecError(f"{side}: {key} must be a mapping, got {type(merged[key]).__name__}")
    if "extra_args" in merged and not (
        isinstance(merged["extra_args"], list) and all(isinstance(a, str) for a in merged["extra_args"])
    ):
        raise SpecError(f"{side}: extra_args must be a list of strings (argv items, not a shell string)")


def _shape_for(
    model_dir: Path, hf_overrides: dict[str, Any], explicit: dict[str, Any] | None
) -> ModelShape | None:
    if explicit is not None:
        return ModelShape(**explicit)
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = json.loads(cfg_path.read_text())
    cfg.update(hf_overrides)
    return ModelShape.from_hf_config(cfg)


def resolve_side(raw: dict[str, Any], side: str, base_dir: Path) -> ServerSpec:
    """Merge the shared keys with ``raw[side]`` and build that side's ``ServerSpec``."""
    shared = {k: v for k, v in raw.items() if k not in TOP_ONLY_KEYS}
    override = raw.get(side) or {}
    if not isinstance(override, dict):
        raise SpecError(f"{side}: must be a mapping of overrides")
    unknown = (set(shared) | set(override)) - SHARED_KEYS
    if unknown:
        raise SpecError(f"unknown key(s) {sorted(unknown)} (allowed: {sorted(SHARED_KEYS | TOP_ONLY_KEYS)})")
    merged = {**shared, **override}
    _check_types(side, merged)
    for required in ("model", "port"):
        if required not in merged:
            raise SpecError(f"{side}: `{required}` is required (top level or in the {side} block)")
    # the model is a folder; a relative path is relative to the YAML file (it need not exist yet)
    merged["model"] = str((base_dir / str(merged["model"])).resolve())
    merged.setdefault("kv_role", DEFAULT_ROLE[side])
    device = merged.get("device", "cpu")
    merged.setdefault("kv_buffer_device", device)
    explicit_shape = merged.pop("shape", None)
    merged["shape"] = _shape_for(Path(merged["model"]), merged.get("hf_overrides", {}), explicit_shape)
    merged["env"] = {str(k): str(v) for k, v in merged.get("env", {}).items()}
    for key in ("cpu_cores", "cuda_devices"):
        if merged.get(key) is not None:
            merged[key] = str(merged[key])
    return ServerSpec(name=side, **merged)


def parse_pair_spec(raw: dict[str, Any], base_dir: str | Path = ".") -> PairSpec:
    """Build a ``PairSpec`` from an already-parsed mapping (paths relative to ``base_dir``)."""
    if not isinstance(raw, dict):
        raise SpecError("a pair spec is a YAML mapping")
    base = Path(base_dir)
    proxy = raw.get("proxy") or {}
    unknown = set(proxy) - {"host", "port"}
    if unknown:
        raise SpecError(f"proxy: unknown key(s) {sorted(unknown)}")
    return PairSpec(
        prefill=resolve_side(raw, "prefill", base),
        decode=resolve_side(raw, "decode", base),
        proxy_host=str(proxy.get("host", "127.0.0.1")),
        proxy_port=int(proxy.get("port", 8000)),
    )


def load_pair_spec(path: str | Path) -> PairSpec:
    """Read a YAML pair spec (``yaml.safe_load`` only) and resolve both sides."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    spec = parse_pair_spec(raw, path.resolve().parent)
    spec.source = str(path)
    return spec


def with_side(spec: PairSpec, side: str, **changes: Any) -> PairSpec:
    """A copy of ``spec`` with one side changed (e.g. free ports, or a deliberate mismatch)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    return dataclasses.replace(spec, **{side: dataclasses.replace(getattr(spec, side), **changes)})


# ------------------------------------------------------------------------------------------ argv tools


def parse_vllm_argv(argv: list[str]) -> tuple[str, dict[str, str | bool]]:
    """Split ``[python, -m, module, --flag value | --bare-flag, ...]`` into (module, {flag: value}).

    Raises ValueError for a shell string, a missing ``-m``, a positional argument or a repeated flag.
    Values are kept as strings (a bare flag maps to True).
    """
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError(f"a launch argv must be a list of strings, got {argv!r}")
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError(f"expected [python, '-m', module, ...], got {argv[:3]!r}")
    module, rest = argv[2], argv[3:]
    flags: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        flag = rest[i]
        if not flag.startswith("--"):
            raise ValueError(f"unexpected positional argument {flag!r} at argv[{i + 3}]")
        if flag in flags:
            raise ValueError(f"flag {flag} given twice")
        if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            flags[flag] = rest[i + 1]
            i += 2
        else:
            flags[flag] = True
            i += 1
    return module, flags
