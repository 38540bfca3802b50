"""Representation convergence: CKA, participation ratio, matched/mismatched cosines on hand-checkable data."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from precompute.analysis.similarity import convergence_tables, linear_cka, participation_ratio


def _random_orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def test_cka_identical_is_one():
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_rotation_and_isotropic_scaling():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, 6, generator=g, dtype=torch.float64)
    y = torch.randn(30, 6, generator=g, dtype=torch.float64)
    q = _random_orthogonal(6, 2)
    base = linear_cka(x, y).item()
    assert 0 < base < 1
    assert linear_cka(x @ q * 3.5, y).item() == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, (y @ q) * 0.01 + 7.0).item() == pytest.approx(base, abs=1e-12)  # shift: centred
    assert linear_cka(x, x @ q * 2).item() == pytest.approx(1.0, abs=1e-12)


def test_cka_batched_and_degenerate():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 10, 5, generator=g)
    out = linear_cka(x, x)
    assert out.shape == (4,)
    assert torch.allclose(out, torch.ones(4, dtype=torch.float64))
    const = torch.ones(10, 5)
    assert math.isnan(linear_cka(const, x[0]).item())


def test_participation_ratio_isotropic_and_rank_one():
    g = torch.Generator().manual_seed(4)
    d = 8
    iso = torch.randn(20000, d, generator=g, dtype=torch.float64)
    assert participation_ratio(iso).item() == pytest.approx(d, rel=0.02)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    rank1 = torch.randn(50, 1, generator=g, dtype=torch.float64) * direction + 5.0
    assert participation_ratio(rank1).item() == pytest.approx(1.0, abs=1e-9)
    # Two equal-variance orthogonal directions: exactly 2 (a hand-computed spectrum [1, 1, 0, ...]).
    two = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]], dtype=torch.float64)
    assert participation_ratio(two).item() == pytest.approx(2.0, abs=1e-12)


def _contexts(centroids: dict[str, torch.Tensor], per: int, noise: float, seed: int):
    """Contexts around given (lang -> (L+1, K, d)) centroids; noise cancels exactly when per == 2."""
    g = torch.Generator().manual_seed(seed)
    xs, langs, concepts = [], [], []
    for lang, cent in centroids.items():
        n_layers, k, d = cent.shape
        for c in range(k):
            eps = torch.randn(n_layers, d, generator=g) * noise
            for s in range(per):
                xs.append(cent[:, c] + (eps if s % 2 == 0 else -eps))
                langs.append(lang)
                concepts.append(f"c{c}")
    return torch.stack(xs, dim=1), langs, concepts


def test_identical_centroids_give_matched_cosine_one_and_cka_one():
    g = torch.Generator().manual_seed(5)
    shared = torch.randn(3, 5, 16, generator=g)  # 3 layers (incl. embeddings), 5 concepts, d=16
    resid, langs, concepts = _contexts({"de": shared, "en": shared, "fr": shared}, per=2, noise=0.3, seed=6)
    sim, comp = convergence_tables(resid, langs, concepts)
    assert set(sim["metric"].unique()) >= {"matched_cosine", "mismatched_cosine", "cka", "retrieval_acc"}
    pairs = sim
    assert set(zip(pairs["lang_a"], pairs["lang_b"])) == {("de", "en"), ("de", "fr"), ("en", "fr")}
    assert (pairs["lang_a"] < pairs["lang_b"]).all()
    for metric in ("matched_cosine", "matched_cosine_raw", "cka", "retrieval_acc"):
        vals = pairs.filter(pl.col("metric") == metric)["value"]
        assert vals.len() == 9  # 3 pairs x 3 layers
        assert vals.min() == pytest.approx(1.0, abs=1e-9), metric
    mism = pairs.filter(pl.col("metric") == "mismatched_cosine")["value"]
    assert mism.max() < 0.9
    gap = sim.filter(pl.col("metric") == "cosine_gap")
    assert gap.height == 9 and (gap["value"] > 0.1).all()
    # Pooled dimensionality equals per-language dimensionality: the languages add no directions.
    ratio = comp.filter(pl.col("metric") == "pr_ratio")["value"]
    assert ratio.len() == 3 and ratio.min() == pytest.approx(1.0, abs=1e-9)
    lang_share = comp.filter(pl.col("metric") == "language_variance_share")["value"]
    assert lang_share.max() == pytest.approx(0.0, abs=1e-9)
    assert comp.filter(pl.col("metric") == "concept_variance_share")["value"].min() == pytest.approx(1.0)
    assert set(comp["scope"].unique()) == {"all", "de", "en", "fr"}
    assert comp.filter(pl.col("scope") == "en")["metric"].unique().to_list() == ["participation_ratio"]
    assert sim.schema == {
        "layer": pl.Int32,
        "lang_a": pl.Utf8,
        "lang_b": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
    }
    assert comp.schema == {"layer": pl.Int32, "scope": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64}


def test_language_offset_separates_raw_from_centred_and_unrelated_languages_score_low():
    g = torch.Generator().manual_seed(7)
    shared = torch.randn(1, 6, 32, generator=g)
    offset = torch.randn(1, 1, 32, generator=g) * 10
    other = torch.randn(1, 6, 32, generator=g)
    resid, langs, concepts = _contexts({"de": shared, "en": shared + offset, "fr": other}, per=2, noise=0.0, seed=8)
    sim, comp = convergence_tables(resid, langs, concepts)

    def value(a: str, b: str, metric: str) -> float:
        return sim.filter((pl.col("lang_a") == a) & (pl.col("lang_b") == b) & (pl.col("metric") == metric))[
            "value"
        ].item()

    # A pure language offset: centred measures see identical concept layouts, raw cosines do not.
    assert value("de", "en", "matched_cosine") == pytest.approx(1.0, abs=1e-9)
    assert value("de", "en", "cka") == pytest.approx(1.0, abs=1e-9)
    assert value("de", "en", "matched_cosine_raw") < 0.9
    # An unrelated language: no alignment beyond chance.
    assert value("de", "fr", "cka") < 0.9
    assert value("de", "fr", "matched_cosine") < 0.6
    assert comp.filter(pl.col("metric") == "language_variance_share")["value"].item() > 0.3


def test_pairs_use_shared_concepts_only_and_skip_undersized_pairs():
    g = torch.Generator().manual_seed(9)
    cent = torch.randn(2, 4, 8, generator=g)
    resid, langs, concepts = _contexts({"de": cent, "en": cent}, per=1, noise=0.0, seed=10)
    # Drop concepts c2, c3 from English and add a language with one concept only.
    keep = [i for i, (lang, c) in enumerate(zip(langs, concepts)) if not (lang == "en" and c in ("c2", "c3"))]
    resid = torch.cat([resid[:, keep], cent[:, :1].clone()], dim=1)
    langs = [langs[i] for i in keep] + ["fi"]
    concepts = [concepts[i] for i in keep] + ["c0"]
    sim, comp = convergence_tables(resid, langs, concepts)
    pairs = set(zip(sim["lang_a"], sim["lang_b"]))
    assert ("de", "en") in pairs and ("de", "fi") not in pairs and ("en", "fi") not in pairs
    assert sim.filter((pl.col("lang_a") == "de") & (pl.col("metric") == "cka"))["value"].min() == pytest.approx(1.0)
    assert "fi" not in comp["scope"].to_list()  # one point has no covariance


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="layers, contexts, d"):
        convergence_tables(torch.zeros(3, 4), ["a"] * 3, ["x"] * 3)
    with pytest.raises(ValueError, match="length 4"):
        convergence_tables(torch.zeros(2, 4, 3), ["a"] * 3, ["x"] * 4)
