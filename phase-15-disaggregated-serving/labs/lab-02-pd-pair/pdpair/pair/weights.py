"""Seeded random weights for the shipped tiny Llama, written once as safetensors into a cache folder.

Why not ``--load-format dummy``: vLLM's dummy weights are uniform in +-1e-3, so every logit is about
-ln(vocab) and greedy output just alternates two tokens whatever the prompt. Comparing such output says
little about whether the KV cache arrived intact. These weights are large enough (attention scores of
order 1-10) that the greedy continuation depends on the whole context: change one early prompt token and
the output changes (the vLLM tests check exactly that, as a control).

    python -m pdpair.pair.weights [--config models/tiny-llama] [--out out/models] [--seed 0]

prints the folder (``config.json`` + ``model.safetensors``, ~110 MB for the shipped config). The folder
name carries a hash of the config, seed and scales, so a changed config gets fresh weights. Needs torch
and safetensors (both come with vLLM). Same seed -> bit-identical weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from pdpair import LAB_DIR

DEFAULT_CONFIG_DIR = LAB_DIR / "models" / "tiny-llama"
DEFAULT_CACHE_DIR = LAB_DIR / "out" / "models"
GENERATOR_VERSION = 1
# standard deviations: embeddings, every linear projection, the output head (norm weights are 1)
SCALES = {"embed": 1.0, "linear": 0.08, "lm_head": 0.08}


def _tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a LlamaForCausalLM (Hugging Face layout, as vLLM loads it)."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or h // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h), "model.norm.weight": (h,)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (heads * head_dim, h),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, h),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, h),
            p + "self_attn.o_proj.weight": (h, heads * head_dim),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })  # fmt: skip
    if not cfg.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def weights_dir(
    config_dir: Path = DEFAULT_CONFIG_DIR, cache_dir: Path = DEFAULT_CACHE_DIR, seed: int = 0
) -> Path:
    """Where the weights for this config and seed live (whether or not they exist yet)."""
    raw = (Path(config_dir) / "config.json").read_bytes()
    key = hashlib.sha256(raw + json.dumps([seed, SCALES, GENERATOR_VERSION]).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{Path(config_dir).name}-seed{seed}-{key}"


def materialize(
    config_dir: Path = DEFAULT_CONFIG_DIR, cache_dir: Path = DEFAULT_CACHE_DIR, seed: int = 0
) -> Path:
    """Generate (once) and return a model folder vLLM can load with ``--load-format safetensors``."""
    import torch
    from safetensors.torch import save_file

    out = weights_dir(config_dir, cache_dir, seed)
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    cfg = json.loads((Path(config_dir) / "config.json").read_text())
    dtype = getattr(torch, cfg.get("torch_dtype", "bfloat16"))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in _tensor_shapes(cfg).items():
        if len(shape) == 1:
            t = torch.ones(shape)
        else:
            kind = "embed" if "embed_tokens" in name else "lm_head" if name == "lm_head.weight" else "linear"
            t = torch.randn(shape, generator=gen) * SCALES[kind]
        tensors[name] = t.to(dtype).contiguous()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(Path(config_dir) / "config.json", tmp / "config.json")
    try:
        tmp.rename(out)  # atomic: a concurrent run either sees nothing or a complete folder
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pdpair.pair.weights", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_DIR, help="folder with config.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE_DIR, help="cache folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(materialize(args.config, args.out, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
