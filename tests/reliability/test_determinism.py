"""Determinism: the same config and seeds give the same store.

Same config, same seeds, same machine: identical stores, row for row, every table (only wall-clock
columns differ). On CPU this is exact and tested here (the kill/resume tests add the same check across
processes: a store finished by a resumed subprocess equals this process's reference). On a GPU, CUDA
does not promise bit-identical reductions (and bf16/fp16 round activations coarsely), so two GPU runs are
held to the tolerance below instead; ``test_gpu_runs_agree_within_tolerance`` checks it where a GPU is
present, and ``test_tolerance_check_*`` check that the comparison itself accepts what the tolerance allows
and rejects real differences.

GPU tolerance (``GPU_TOLERANCE``): AP-type values (neuron_ap.ap, neuron_summary.mean_ap/max_ap) within
1e-3 absolute in float32 and 1e-2 in bf16/fp16; a top-K list may differ from the other run's only by units
whose AP is within that tolerance of the K-th AP (ties reordered or swapped at the cut); probe accuracies
within one test context (1 / n_test); every table has the same keys (checkpoints, layers, languages,
concepts, ranks).
"""

from __future__ import annotations

import shutil
from collections import defaultdict

import pytest
import torch

from precompute.cli import app
from precompute.store import DDL, open_readonly
from tests.support.reliability import (
    assert_same_rows,
    copy_of_reference,
    raw_connect,
    reference_store,
    run_config,
    runner,
    store_rows,
)

GPU_TOLERANCE = {"float32": 1e-3, "bfloat16": 1e-2, "float16": 1e-2}


@pytest.mark.slow
def test_two_runs_give_identical_stores(tmp_path):
    reference = reference_store()
    again = tmp_path / "again.duckdb"
    result = runner.invoke(app, ["run", str(run_config()), "--out", str(again)])
    assert result.exit_code == 0, result.output
    rows = store_rows(again)
    assert all(rows[t] for t in ("neuron_ap", "neuron_summary", "probe_results", "expert_overlap", "sentences"))
    assert_same_rows(again, reference)


# --- the tolerance comparison -------------------------------------------------------------------------


def _frame(path, sql):
    con = open_readonly(path)
    try:
        return con.sql(sql).pl()
    finally:
        con.close()


def assert_stores_close(a, b, *, ap_atol: float) -> None:
    """Two stores of the same config agree within the GPU tolerance described in the module docstring."""
    for table in DDL:
        keys = {
            "neuron_ap": "checkpoint, lang, concept_id, rank",
            "neuron_summary": "checkpoint, layer, unit",
            "probe_results": "checkpoint, layer, representation",
            "expert_overlap": "checkpoint, concept_id, lang_a, lang_b",
            "checkpoints": "checkpoint",
            "sentences": "sentence_id",
            "layers": "layer",
        }.get(table)
        if keys:
            ka = _frame(a, f"SELECT {keys} FROM {table} ORDER BY ALL").rows()
            kb = _frame(b, f"SELECT {keys} FROM {table} ORDER BY ALL").rows()
            assert ka == kb, f"{table}: different keys"
    # AP-type values, key by key.
    for table, key, cols in (
        ("neuron_ap", "checkpoint, lang, concept_id, rank", ["ap"]),
        ("neuron_summary", "checkpoint, layer, unit", ["mean_ap", "max_ap"]),
    ):
        fa = _frame(a, f"SELECT {key}, {', '.join(cols)} FROM {table} ORDER BY {key}")
        fb = _frame(b, f"SELECT {key}, {', '.join(cols)} FROM {table} ORDER BY {key}")
        for col in cols:
            worst = (fa[col] - fb[col]).abs().max()
            assert worst <= ap_atol, f"{table}.{col} differs by {worst:.2e} > {ap_atol:g}"
    # Top-K membership: differences only at ties / the cut.
    ta = _frame(a, "SELECT checkpoint, lang, concept_id, layer, unit, ap, rank FROM neuron_ap")
    tb = _frame(b, "SELECT checkpoint, lang, concept_id, layer, unit, ap, rank FROM neuron_ap")
    groups = defaultdict(dict)
    for name, frame in (("a", ta), ("b", tb)):
        for ck, lang, cid, layer, unit, ap, rank in frame.iter_rows():
            groups[(ck, lang, cid)].setdefault(name, {})[(layer, unit)] = (ap, rank)
    for group, runs in groups.items():
        ua, ub = runs["a"], runs["b"]
        kth_a = min(ap for ap, _ in ua.values())
        kth_b = min(ap for ap, _ in ub.values())
        for unit in set(ua) - set(ub):
            assert ua[unit][0] <= kth_b + ap_atol, (
                f"{group}: unit {unit} (AP {ua[unit][0]:.4f}) missing from the other top-K"
            )
        for unit in set(ub) - set(ua):
            assert ub[unit][0] <= kth_a + ap_atol, (
                f"{group}: unit {unit} (AP {ub[unit][0]:.4f}) missing from the other top-K"
            )
    # Probe accuracy: within one test context.
    pa = _frame(a, "SELECT checkpoint, layer, representation, accuracy, n_test FROM probe_results ORDER BY ALL")
    pb = _frame(b, "SELECT checkpoint, layer, representation, accuracy, n_test FROM probe_results ORDER BY ALL")
    worst = ((pa["accuracy"] - pb["accuracy"]).abs() * pa["n_test"]).max()
    assert worst <= 1 + 1e-9, f"probe accuracy differs by {worst:.2f} test contexts"


def test_tolerance_check_accepts_noise_and_tie_swaps(tmp_path):
    reference = reference_store()
    noisy = copy_of_reference(tmp_path)
    con = raw_connect(noisy)
    # AP noise well inside the tolerance, and a swap of the K-th unit for an outsider with the same AP.
    con.execute("UPDATE neuron_ap SET ap = ap + 4e-4 * (((unit * 7 + rank) % 5) - 2) / 2")
    con.execute("UPDATE neuron_summary SET mean_ap = mean_ap - 5e-4, max_ap = max_ap + 5e-4")
    k = con.execute("SELECT max(rank) FROM neuron_ap").fetchone()[0]
    ck, lang, cid, layer, unit = con.execute(
        "SELECT checkpoint, lang, concept_id, layer, unit FROM neuron_ap WHERE rank = ? LIMIT 1", [k]
    ).fetchone()
    con.execute(
        "UPDATE neuron_ap SET unit = unit + 100000 WHERE checkpoint = ? AND lang = ? AND concept_id = ? AND rank = ?",
        [ck, lang, cid, k],
    )
    con.close()
    assert_stores_close(noisy, reference, ap_atol=1e-3)


@pytest.mark.parametrize("change", ["ap-beyond-tolerance", "top-unit-replaced", "accuracy-two-contexts"])
def test_tolerance_check_rejects_real_differences(change, tmp_path):
    reference = reference_store()
    other = copy_of_reference(tmp_path)
    con = raw_connect(other)
    if change == "ap-beyond-tolerance":
        con.execute("UPDATE neuron_ap SET ap = ap + 5e-3 WHERE rank = 2")
    elif change == "top-unit-replaced":
        con.execute(
            "UPDATE neuron_ap SET unit = unit + 100000 WHERE rank = 1 AND ap > (SELECT min(ap) FROM neuron_ap) + 0.01"
        )
    else:
        con.execute("UPDATE probe_results SET accuracy = accuracy + 2.0 / n_test WHERE layer = 0")
    con.close()
    with pytest.raises(AssertionError):
        assert_stores_close(other, reference, ap_atol=1e-3)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_runs_agree_within_tolerance(dtype, tmp_path):
    stores = []
    for name in ("first", "second"):
        store = tmp_path / f"{name}.duckdb"
        result = runner.invoke(
            app, ["run", str(run_config()), "--out", str(store), "--device", "cuda", "--dtype", dtype]
        )
        assert result.exit_code == 0, result.output
        stores.append(store)
    assert_stores_close(*stores, ap_atol=GPU_TOLERANCE[dtype])
    exact = store_rows(stores[0]) == store_rows(stores[1])
    print(f"GPU {dtype}: two runs {'bit-identical' if exact else 'within tolerance, not bit-identical'}")
    shutil.rmtree(tmp_path, ignore_errors=True)
