"""The pair spec: one YAML file describes a prefill (producer) and a decode (consumer) vLLM server.

Top-level keys are shared by both sides; a ``prefill:`` or ``decode:`` block overrides any of them for
that side only (that is how a mismatched pair is made on purpose). Unknown keys are an error, as they
are in vLLM's own config. See ``pair.cpu.yaml`` for every key with a comment.

``load_pair_spec(path)`` reads it with a strict ``yaml.SafeLoader`` and returns a ``PairSpec`` whose two
``ServerSpec`` are fully resolved: defaults applied, overrides merged, the model folder made absolute,
and the model's shape (layers, KV heads, head size) read from its ``config.json`` when it exists.

Strict loading (every rejection is a ``SpecError`` whose message names the file and the key):

- a key given twice in one mapping (YAML itself would let the second silently win);
- a file larger than ``MAX_SPEC_BYTES`` (64 KiB) or using more than ``MAX_ALIASES`` (16) aliases
  (``*ref``): a few hundred bytes of nested aliases can otherwise expand into gigabytes;
- a value of the wrong type (``skip_tokenizer_init: 'false'`` is a string, not false; ``dtype: 123`` is
  not a string), or out of range (ports 1..65535, ``block_size``/``max_model_len``/
  ``tensor_parallel_size`` >= 1, ``kv_role``/``kv_load_failure_policy``/``device`` from vLLM 0.32's
  choices: ``vllm/config/kv_transfer.py`` ``KVRole``, ``kv_load_failure_policy``);
- ``proxy:`` that is not a mapping of ``host``/``port``;
- ``cpu_cores`` that is not a core list (``"0"``, ``"0-3"``, ``"0,2"``) per TP rank, ``|``-separated, one
  list per rank (``"0|1"`` for ``tensor_parallel_size: 2``: vLLM 0.32 asserts the count,
  ``vllm/utils/ompmultiprocessing.py`` ``_parse_omp_threads_bind_env``).
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
    cpu_cores: str | None = None  # CPU: VLLM_CPU_OMP_THREADS_BIND, e.g. "0", "0-3"; per TP rank "0|1"
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


MAX_SPEC_BYTES = 64 * 1024
MAX_ALIASES = 16
KV_ROLES = ("kv_producer", "kv_consumer", "kv_both")  # vLLM 0.32 vllm/config/kv_transfer.py KVRole
LOAD_FAILURE_POLICIES = ("recompute", "fail")  # vLLM 0.32 KVTransferConfig.kv_load_failure_policy
DEVICES = ("cpu", "cuda")
PORT_RANGE = (1, 65535)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _need(cond: bool, where: str, key: str, what: str, value: Any) -> None:
    if not cond:
        raise SpecError(f"{where}.{key} must be {what}, got {value!r}")


def _check_value(where: str, key: str, v: Any) -> None:
    """Type- and range-check one field of a side (``where``: "prefill" or "decode")."""
    if key in ("port", "side_channel_port"):
        _need(_is_int(v) and PORT_RANGE[0] <= v <= PORT_RANGE[1], where, key, "an integer port 1..65535", v)
    elif key in ("block_size", "max_model_len", "tensor_parallel_size"):
        _need(_is_int(v) and v >= 1, where, key, "an integer >= 1", v)
    elif key == "seed":
        _need(_is_int(v) and 0 <= v < 2**63, where, key, "an integer 0..2**63-1", v)
    elif key == "cpu_kvcache_space_gib":
        _need(v is None or (_is_int(v) and v >= 1), where, key, "an integer >= 1 (GiB) or null", v)
    elif key == "skip_tokenizer_init":
        _need(isinstance(v, bool), where, key, "true or false (unquoted)", v)
    elif key == "kv_role":
        _need(v in KV_ROLES, where, key, f"one of {KV_ROLES}", v)
    elif key == "kv_load_failure_policy":
        _need(v in LOAD_FAILURE_POLICIES, where, key, f"one of {LOAD_FAILURE_POLICIES}", v)
    elif key == "device":
        _need(v in DEVICES, where, key, f"one of {DEVICES}", v)
    elif key in ("model", "load_format", "dtype", "kv_cache_dtype", "connector", "kv_buffer_device",
                 "host", "side_channel_host"):  # fmt: skip
        _need(isinstance(v, str) and v.strip() != "", where, key, "a non-empty string", v)
    elif key == "kv_connector_module_path":
        _need(v is None or (isinstance(v, str) and v.strip() != ""), where, key, "a module path or null", v)
    elif key in ("cpu_cores", "cuda_devices"):
        _need(v is None or isinstance(v, str) or _is_int(v), where, key, 'a string such as "0-3" or null', v)
    elif key in ("kv_connector_extra_config", "kv_transfer_extra", "hf_overrides"):
        _need(isinstance(v, dict) and all(isinstance(k, str) for k in v), where, key,
              "a mapping with string keys", type(v).__name__ if not isinstance(v, dict) else v)  # fmt: skip
    elif key == "env":
        _need(isinstance(v, dict), where, key, "a mapping of NAME: value", type(v).__name__)
        for name, val in v.items():
            _need(isinstance(name, str) and name != "", where, key, "a mapping with string names", name)
            _need(
                isinstance(val, str | int | float | bool), where, f"{key}.{name}", "a string or number", val
            )
    elif key == "extra_args":
        _need(isinstance(v, list) and all(isinstance(a, str) for a in v), where, key,
              "a list of strings (argv items, not a shell string)", v)  # fmt: skip
    elif key == "shape":
        fields = {"num_hidden_layers", "num_key_value_heads", "head_dim"}
        _need(isinstance(v, dict) and set(v) == fields and all(_is_int(x) and x >= 1 for x in v.values()),
              where, key, f"a mapping of {sorted(fields)} to integers >= 1", v)  # fmt: skip


def parse_binds(value: str) -> list[set[int]]:
    """The cores of each TP rank in a ``cpu_cores`` value: ``"0|1-2"`` -> ``[{0}, {1, 2}]``.
    ValueError for anything else (an empty part, a reversed range, a non-number)."""
    binds = []
    for part in str(value).split("|"):
        cores: set[int] = set()
        for item in part.split(","):
            lo, dash, hi = item.strip().partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
                raise ValueError(f"{value!r}: {item!r} is not a core or a range such as 2-3")
            cores.update(range(int(lo), int(hi or lo) + 1))
        binds.append(cores)
    return binds


def _check_types(side: str, merged: dict[str, Any]) -> None:
    for key, value in merged.items():
        _check_value(side, key, value)
    cores = merged.get("cpu_cores")
    if cores is not None:
        try:
            binds = parse_binds(str(cores))
        except ValueError as exc:
            raise SpecError(f"{side}.cpu_cores: {exc}") from None
        tp = merged.get("tensor_parallel_size", 1)
        if len(binds) != tp:
            raise SpecError(f"{side}.cpu_cores {cores!r} binds {len(binds)} rank(s) but tensor_parallel_size is "
                            f"{tp}: give one core list per rank, '|'-separated (e.g. '0|1'); vLLM asserts the count")  # fmt: skip


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
        raise SpecError(f"{side} must be a mapping of overrides, got {override!r}")
    unknown = (set(shared) | set(override)) - SHARED_KEYS
    if unknown:
        raise SpecError(
            f"unknown key(s) {sorted(map(str, unknown))} (allowed: {sorted(SHARED_KEYS | TOP_ONLY_KEYS)})"
        )
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
    proxy = raw.get("proxy")
    proxy = {} if proxy is None else proxy
    if not isinstance(proxy, dict):
        raise SpecError(f"proxy must be a mapping such as {{host: 127.0.0.1, port: 8000}}, got {proxy!r}")
    unknown = set(proxy) - {"host", "port"}
    if unknown:
        raise SpecError(f"proxy: unknown key(s) {sorted(map(str, unknown))} (allowed: host, port)")
    host, port = proxy.get("host", "127.0.0.1"), proxy.get("port", 8000)
    _need(isinstance(host, str) and host.strip() != "", "proxy", "host", "a non-empty string", host)
    _need(_is_int(port) and 0 <= port <= 65535, "proxy", "port", "an integer port 0..65535 (0 = free)", port)
    if "description" in raw and not isinstance(raw["description"], str):
        raise SpecError(f"description must be a string, got {raw['description']!r}")
    return PairSpec(
        prefill=resolve_side(raw, "prefill", base),
        decode=resolve_side(raw, "decode", base),
        proxy_host=host,
        proxy_port=port,
    )


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and more than ``MAX_ALIASES`` aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise SpecError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}): "
                                "a pair spec does not need them and nested ones can expand without bound")  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        # Keyed on the key itself, not its line: a flow mapping (`b: {x: 1, x: 2}`) has both on one line.
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                raise SpecError(f"unhashable key at line {line}") from None
            if first is not None:
                raise SpecError(f"duplicate key {key!r} at line {line} "
                                f"(first at line {first}); YAML would silently keep the last one")  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping)


def read_spec_yaml(path: Path) -> Any:
    """The parsed YAML of a spec file, loaded strictly (size, aliases, duplicate keys)."""
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{size} bytes is larger than a pair spec can be ({MAX_SPEC_BYTES})")
    return yaml.load(path.read_bytes(), Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects


def load_pair_spec(path: str | Path) -> PairSpec:
    """Read a YAML pair spec (strictly, with a ``yaml.SafeLoader`` subclass) and resolve both sides.

    Raises ``SpecError`` naming the file (and the key or line) for every problem listed in the module
    docstring; ``yaml.YAMLError`` for text that is not YAML or uses tags a safe loader refuses.
    """
    path = Path(path)
    try:
        raw = read_spec_yaml(path)
        spec = parse_pair_spec(raw, path.resolve().parent)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None
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
