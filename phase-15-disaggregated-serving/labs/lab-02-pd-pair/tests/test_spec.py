"""Ungraded: the pair-spec loader is strict (pdpair.pair.spec), so a typo or a hostile file fails loudly at load.

Each case here loaded silently (or blew up later, or cost seconds and megabytes) before the loader was
made strict: a second ``decode:`` block won, ``block_size: 0`` reached find_hazards as a division by
zero, ``skip_tokenizer_init: 'false'`` turned the flag on, a 425-byte alias bomb took 1.9 s and 80 MiB.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from pdpair.pair.spec import MAX_SPEC_BYTES, SpecError, load_pair_spec, parse_pair_spec

pytestmark = pytest.mark.ungraded
LAB = Path(__file__).resolve().parents[1]  # the lab folder
BASE = "model: m\nport: 8100\ndecode:\n  port: 8200\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pair.yaml"
    path.write_text(text)
    return path


def test_the_shipped_specs_still_load():
    assert load_pair_spec(LAB / "pair.cpu.yaml").decode.port == 8200
    assert load_pair_spec(LAB / "pair.2gpu-hosts.yaml").decode.host == "10.0.0.2"


def test_duplicate_keys_are_rejected_naming_the_file_key_and_lines(tmp_path):
    path = write(tmp_path, "model: m\nport: 8100\ndecode:\n  port: 8200\ndecode:\n  port: 8300\n")
    with pytest.raises(SpecError) as info:
        load_pair_spec(path)
    msg = str(info.value)
    assert str(path) in msg and "'decode'" in msg and "line 5" in msg and "line 3" in msg, msg
    nested = write(tmp_path, "model: m\nport: 8100\nprefill:\n  port: 1\n  port: 2\n")
    with pytest.raises(SpecError, match="duplicate key 'port'"):
        load_pair_spec(nested)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("block_size: 0", "block_size"),
        ("block_size: -16", "block_size"),
        ("max_model_len: 0", "max_model_len"),
        ("tensor_parallel_size: 0", "tensor_parallel_size"),
        ("side_channel_port: -1", "side_channel_port"),
        ("side_channel_port: 1000000000000000000000000000000", "side_channel_port"),
        ("skip_tokenizer_init: 'false'", "skip_tokenizer_init"),
        ("skip_tokenizer_init: 1", "skip_tokenizer_init"),
        ("dtype: 123", "dtype"),
        ("kv_role: producer", "kv_role"),
        ("kv_load_failure_policy: ignore", "kv_load_failure_policy"),
        ("device: tpu", "device"),
        ("seed: 1.5", "seed"),
        ("cpu_kvcache_space_gib: 0", "cpu_kvcache_space_gib"),
        ("env: {A: [1, 2]}", "env.A"),
        ("hf_overrides: [1]", "hf_overrides"),
        ("shape: {num_hidden_layers: 2}", "shape"),
        ("host: ''", "host"),
    ],
)
def test_every_field_is_type_and_range_checked(tmp_path, line, key):
    path = write(tmp_path, BASE + line + "\n")
    with pytest.raises(SpecError) as info:
        load_pair_spec(path)
    assert str(path) in str(info.value) and key in str(info.value), str(info.value)


@pytest.mark.parametrize("port", [0, -1, 65536, 10**30, "80", True])
def test_ports_are_1_to_65535(tmp_path, port):
    with pytest.raises(SpecError, match="port"):
        parse_pair_spec({"model": "m", "port": port}, tmp_path)


def test_proxy_block_must_be_a_mapping(tmp_path):
    with pytest.raises(SpecError) as info:
        load_pair_spec(write(tmp_path, BASE + "proxy: host\n"))
    assert "proxy must be a mapping" in str(info.value) and "'h'" not in str(info.value)
    with pytest.raises(SpecError, match="proxy.port"):
        load_pair_spec(write(tmp_path, BASE + "proxy: {port: 70000}\n"))
    with pytest.raises(SpecError, match="unknown key"):
        load_pair_spec(write(tmp_path, BASE + "proxy: {hots: x}\n"))


def test_alias_bomb_is_refused_quickly(tmp_path):
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        levels.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{','.join(['*' + prev] * 9)}]")
    bomb = BASE + "env:\n" + "".join(f"  {line}\n" for line in levels)
    assert len(bomb) < 1000
    started = time.monotonic()
    with pytest.raises(SpecError, match="aliases"):
        load_pair_spec(write(tmp_path, bomb))
    assert time.monotonic() - started < 0.5
    few = BASE + "kv_connector_extra_config: &x {k: 1}\nhf_overrides: *x\n"
    assert load_pair_spec(write(tmp_path, few)).prefill.hf_overrides == {"k": 1}


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path, BASE + "#" * (MAX_SPEC_BYTES + 1) + "\n")
    with pytest.raises(SpecError, match="larger than"):
        load_pair_spec(path)


def test_safe_load_semantics_kept(tmp_path):
    with pytest.raises(yaml.YAMLError):
        load_pair_spec(write(tmp_path, "model: !!python/object/apply:os.system ['true']\nport: 1\n"))
