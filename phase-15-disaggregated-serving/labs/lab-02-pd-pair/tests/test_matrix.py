"""The compatibility matrix capture and its catalogue agree (ungraded: given data and code, CPU only).

``captures/compat-matrix/matrix.json`` is recorded by ``make matrix``; ``pdpair.evidence.matrix.ROWS`` says what
each row changed and what a pre-launch check must name for it. These tests keep the two, ``MATRIX.md``
and the README's hazard table from drifting apart (``record_matrix.py --relabel`` re-syncs the labels).
"""

from __future__ import annotations

import pytest

from pdpair.evidence import oracle
from pdpair.evidence.matrix import (
    HAZARD_WHEN,
    LAB_DIR,
    MATRIX_DIR,
    MATRIX_JSON,
    OUTCOMES,
    ROWS,
    ROWS_BY_NAME,
    SAME_AS_WORKS,
    TABLE_BEGIN,
    TABLE_END,
    apply_row,
    hazard_table,
    load_matrix,
    merge_args,
    render_markdown,
    row_record,
    row_spec,
)
from pdpair.pair.spec import load_pair_spec

pytestmark = pytest.mark.ungraded
MATRIX = load_matrix(MATRIX_JSON)
RELABEL = "run `record_matrix.py --relabel` after changing pdpair.evidence.matrix.ROWS"


def test_matrix_has_enough_rows_outcomes_and_versions():
    rows = MATRIX["rows"]
    run = [r for r in rows if r.get("outcome")]
    assert len(rows) >= 24, f"at least 24 rows, got {len(rows)}"
    assert len({r["outcome"] for r in run}) >= 3, "at least three distinct outcomes"
    assert MATRIX["vllm"].startswith("0.32.0") and MATRIX["nixl"], (MATRIX["vllm"], MATRIX["nixl"])
    for r in rows:
        if r.get("outcome") is None:
            assert r.get("cannot_run"), f"{r['name']}: a row not run must say why"
            continue
        assert r["outcome"] in OUTCOMES, r
        assert r.get("evidence") or r.get("probes"), (
            f"{r['name']}: a run row carries evidence (log lines, probes)"
        )
        assert set(r["argv"]) == {"prefill", "decode"} and "timings" in r, r["name"]
        if r["outcome"] not in ("refuses_to_start", "fails_at_first_request"):
            assert r.get("oracle", {}).get("branch") in oracle.BRANCHES, (
                f"{r['name']}: the oracle's deciding branch"
            )
            for p in r["probes"]:
                assert p.get("oracle", {}).get("outcome") in (
                    *oracle.OK,
                    oracle.CORRUPTION,
                    oracle.UNDECIDED,
                ), p


def test_rows_that_moved_kv_were_judged_on_their_bits():
    """Every row whose probes the oracle judged with the KV dumps (part a) says so per probe; the block-size
    rows show both sides of the lab's fix: bit-identical with it, corrupt (decided by the KV) without."""
    rows = {r["name"]: r for r in MATRIX["rows"]}
    fixed, stock = rows.get("block_size_32_64"), rows.get("block_size_32_64_stock")
    if not fixed or not stock:
        pytest.skip("block-size rows not recorded yet")
    assert fixed["outcome"] in SAME_AS_WORKS and all(p["oracle"].get("kv_equal") is True for p in fixed["probes"]
                                                      if p["path"] == "direct"), fixed["oracle"]  # fmt: skip
    assert stock["outcome"] == "corrupt_output_200" and stock["oracle"]["branch"] == "kv", stock["oracle"]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_each_catalogue_row_is_consistent(row):
    if row.name not in {r["name"] for r in MATRIX["rows"]}:
        pytest.skip(f"{row.name}: not recorded yet (make matrix MATRIX_ARGS='--only {row.name}')")
    rec = {r["name"]: r for r in MATRIX["rows"]}[row.name]
    assert {k: rec.get(k) for k in row_record(row)} == row_record(row), (
        f"{row.name}: labels drifted; {RELABEL}"
    )
    assert set(row.hazards) <= set(HAZARD_WHEN), row.hazards
    if rec.get("outcome") in SAME_AS_WORKS:
        assert not row.hazards and not row.unseen, f"{row.name} {rec['outcome']}: it may name no hazard"
    else:
        assert row.hazards or row.unseen, (
            f"{row.name} ({rec.get('outcome') or 'not run'}): name a hazard or say why no spec check sees it"
        )


def test_matrix_md_and_readme_table_are_generated_from_the_matrix():
    assert (MATRIX_DIR / "MATRIX.md").read_text() == render_markdown(MATRIX), f"MATRIX.md is stale; {RELABEL}"
    readme = (LAB_DIR / "README.md").read_text()
    block = readme[readme.index(TABLE_BEGIN) + len(TABLE_BEGIN) : readme.index(TABLE_END)]
    assert block.strip() == hazard_table(MATRIX).strip(), f"the README's hazard table is stale; {RELABEL}"


def test_apply_row_copies_merges_and_leaves_the_input_alone():
    base = load_pair_spec(LAB_DIR / "pair.cpu.yaml")
    before = repr(base)
    clash = apply_row(base, ROWS_BY_NAME["side_channel_port_clash"])
    assert clash.decode.side_channel_port == base.prefill.side_channel_port
    layers = row_spec(ROWS_BY_NAME["layers_override"])
    assert layers.decode.shape.num_hidden_layers == 6 and layers.prefill.shape == base.prefill.shape
    assert repr(base) == before, "apply_row must not modify its input"
    assert merge_args(["--a", "1", "--b"], ["--a", "2", "--c"]) == ["--a", "2", "--b", "--c"]
