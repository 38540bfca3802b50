"""Representation convergence ("compression"): do the languages come to represent a concept alike?

Input: the residual stream of one checkpoint, mean-pooled over each context's tokens,
``resid_mean`` (layers, contexts, hidden) (layer 0 = embeddings, layer i = output of block i), with each context's
language and concept. Everything is computed from **concept centroids**: the mean of the contexts of
one (language, concept) pair, so that every measure is independent of how many sentences a concept
has, and the cost is that of a (languages x concepts) table, not of the n contexts.

Table ``similarity`` (layer, lang_a, lang_b, metric, value), one row per layer, unordered language
pair (lang_a < lang_b) and metric, over the concepts both languages have (pairs sharing fewer than
two concepts are left out):

- ``matched_cosine``: mean over concepts c of cos(a_c - mean_a, b_c - mean_b), where a_c is the
  centroid of concept c in language a and mean_a the mean of language a's centroids over the pair's
  concepts. **Centred per language**: subtracting each language's mean removes both the common
  offset that makes raw residual-stream cosines near 1 for everything (anisotropy) and the
  language's own offset, so the value measures whether the *concepts* are laid out alike in both
  languages. 1 when both languages have identical centroids.
- ``mismatched_cosine``: the same with c != c' (mean over all ordered pairs of different concepts).
  For centred centroids of equal norm it sits near -1/(k-1); the gap to ``matched_cosine`` is the
  signal.
- ``matched_cosine_raw`` / ``mismatched_cosine_raw``: the same on **uncentred** centroids. These
  keep the language offset (and the anisotropy): high raw values with a small raw gap mean "every
  representation points the same way", not "concepts are shared".
- ``retrieval_acc``: translation retrieval by nearest centred centroid: the fraction of concepts c
  whose most similar centroid (cosine, centred) in the other language is c itself, averaged over
  both directions. Chance is 1/k.
- ``cka``: linear CKA (Kornblith et al. 2019) between the two languages' centroid matrices
  (concepts x d), i.e. with the concepts as the shared sample: 1 when one language's concept layout is
  an orthogonal transform times a scalar of the other's. CKA centres over concepts by definition.
- ``cosine_gap``: matched_cosine - mismatched_cosine, the headline number: how much closer a concept
  is to its own translation than to other concepts (0: no cross-lingual concept structure).

No summary rows: the mean over pairs of a metric is one GROUP BY away (the explorer does it), and
every row names a real language pair.

Table ``compression`` (layer, scope, metric, value):

- ``participation_ratio`` (PR) of the covariance spectrum of the centroids, (sum lambda)^2 /
  sum lambda^2: the effective number of dimensions the points spread over. Scope ``all`` pools every
  (language, concept) centroid; scope ``<lang>`` uses that language's concept centroids only. A
  language-specific geometry gives PR(all) well above PR(lang) (each language adds its own
  directions); a shared one gives PR(all) close to PR(lang). Note PR <= number of points - 1.
- ``pr_ratio`` (scope ``all``): PR(all) / mean over languages of PR(lang).
- ``language_variance_share`` / ``concept_variance_share`` (scope ``all``): the fraction of the
  centroids' total variance (sum of squared distances to the grand mean) explained by the language
  means / by the concept means (between-group sum of squares over total). Language share falling and
  concept share rising is compression.

Values that are undefined (no variance at a layer) are left out, never stored as NaN. All
arithmetic is float64 on ``device`` (default: the input's device), batched over layers in
chunks bounded by ``max_chunk_bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

SIMILARITY_METRICS = (
    "matched_cosine",
    "mismatched_cosine",
    "matched_cosine_raw",
    "mismatched_cosine_raw",
    "retrieval_acc",
    "cka",
    "cosine_gap",
)
_EPS = 1e-12


def _centre(x: torch.Tensor) -> torch.Tensor:
    """Subtract the mean over the points axis (-2)."""
    return x - x.mean(dim=-2, keepdim=True)


def _gram(x: torch.Tensor) -> torch.Tensor:
    """The smaller of X X^T and X^T X (same nonzero spectrum), batched over leading dims."""
    n, d = x.shape[-2], x.shape[-1]
    return x @ x.transpose(-1, -2) if n <= d else x.transpose(-1, -2) @ x


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between two representations of the same points.

    CKA = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with Xc, Yc centred over the points (computed through
    the (points, points) Gram matrices). Invariant to orthogonal transforms and isotropic scaling of either side.

    Parameters
    ----------
    x : Tensor of float, (..., points, hidden)
    y : Tensor of float, (..., points, other hidden)

    Returns
    -------
    Tensor of float64, (...)
        1 for identical inputs; NaN where one side has no variance.

    Raises
    ------
    ValueError
        When the two sides have different numbers of points.
    """
    if x.shape[-2] != y.shape[-2]:
        raise ValueError(f"linear_cka needs the same points on both sides, got {x.shape[-2]} and {y.shape[-2]}")
    x = _centre(x.to(torch.float64))
    y = _centre(y.to(torch.float64))
    kx = x @ x.transpose(-1, -2)
    ky = y @ y.transpose(-1, -2)
    hsic = (kx * ky).sum(dim=(-1, -2))
    norm = torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)
    return torch.where(norm > _EPS, hsic / norm.clamp_min(_EPS), torch.full_like(hsic, float("nan")))


def participation_ratio(x: torch.Tensor) -> torch.Tensor:
    """Participation ratio of the covariance spectrum of points: their effective number of dimensions.

    PR = (sum_i lambda_i)^2 / sum_i lambda_i^2 = tr(C)^2 / ||C||_F^2 for the covariance C of the points (centred
    over them).

    Parameters
    ----------
    x : Tensor of float, (..., points, hidden)

    Returns
    -------
    Tensor of float64, (...)
        Between 1 (all variance along one direction) and min(points - 1, hidden) (isotropic); NaN for points
        without variance.
    """
    g = _gram(_centre(x.to(torch.float64)))
    tr = torch.diagonal(g, dim1=-2, dim2=-1).sum(-1)
    fro2 = (g * g).sum(dim=(-1, -2))
    return torch.where(fro2 > _EPS, tr * tr / fro2.clamp_min(_EPS), torch.full_like(tr, float("nan")))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_EPS)


class _LangView:
    """One language's centroids over a set of k concepts, prepared once for all its pairs."""

    def __init__(self, x: torch.Tensor):  # (layers, concepts, hidden)
        self.k = x.shape[-2]
        self.raw_unit = _unit(x)
        centred = _centre(x)
        self.cen_unit = _unit(centred)
        self.gram = centred @ centred.transpose(-1, -2)  # (layers, concepts, concepts): CKA works on Grams
        self.gram_norm = torch.linalg.matrix_norm(self.gram)


def pair_metrics(xa: torch.Tensor | _LangView, xb: torch.Tensor | _LangView) -> dict[str, torch.Tensor]:
    """Every similarity metric of `SIMILARITY_METRICS` but ``cosine_gap`` for two languages' centroids of the
    same concepts (see the module docstring).

    Parameters
    ----------
    xa, xb : Tensor of float, (layers, concepts, hidden)
        The two languages' centroids of the same >= 2 concepts, in the same order (or views prepared from them).

    Returns
    -------
    dict of str to Tensor of float64, (layers,)

    Raises
    ------
    ValueError
        When the sides do not share the same >= 2 concepts.
    """
    a = xa if isinstance(xa, _LangView) else _LangView(xa.to(torch.float64))
    b = xb if isinstance(xb, _LangView) else _LangView(xb.to(torch.float64))
    k = a.k
    if k < 2 or b.k != k:
        raise ValueError(f"pair metrics need the same >= 2 concepts on both sides, got {a.k} and {b.k}")
    out: dict[str, torch.Tensor] = {}
    raw = a.raw_unit @ b.raw_unit.transpose(-1, -2)  # (layers, concepts, concepts)
    cen = a.cen_unit @ b.cen_unit.transpose(-1, -2)
    for name, cos in (("", cen), ("_raw", raw)):
        diag = torch.diagonal(cos, dim1=-2, dim2=-1).sum(-1)
        out[f"matched_cosine{name}"] = diag / k
        out[f"mismatched_cosine{name}"] = (cos.sum(dim=(-1, -2)) - diag) / (k * (k - 1))
    target = torch.arange(k, device=cen.device)
    a_to_b = (cen.argmax(dim=-1) == target).double().mean(-1)
    b_to_a = (cen.argmax(dim=-2) == target).double().mean(-1)
    out["retrieval_acc"] = (a_to_b + b_to_a) / 2
    norm = a.gram_norm * b.gram_norm
    hsic = (a.gram * b.gram).sum(dim=(-1, -2))
    out["cka"] = torch.where(norm > _EPS, hsic / norm.clamp_min(_EPS), torch.full_like(hsic, float("nan")))
    return out


def _variance_shares(cent: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Between-language and between-concept share of the centroids' total sum of squares.

    cent: (layers, languages, concepts, hidden); present: (languages, concepts). Returns two (layers,) tensors.
    """
    w = present.to(cent.dtype)  # (languages, concepts)
    total_w = w.sum()
    grand = (cent * w[None, :, :, None]).sum(dim=(1, 2)) / total_w  # (layers, hidden)
    dev = (cent - grand[:, None, None, :]) * w[None, :, :, None].sqrt()
    ss_total = (dev * dev).sum(dim=(1, 2, 3))
    n_lang = w.sum(1)  # (languages,)
    n_con = w.sum(0)  # (concepts,)
    lang_mean = (cent * w[None, :, :, None]).sum(2) / n_lang.clamp_min(1)[None, :, None]
    con_mean = (cent * w[None, :, :, None]).sum(1) / n_con.clamp_min(1)[None, :, None]
    ss_lang = (n_lang[None, :] * ((lang_mean - grand[:, None]) ** 2).sum(-1)).sum(-1)
    ss_con = (n_con[None, :] * ((con_mean - grand[:, None]) ** 2).sum(-1)).sum(-1)
    nan = torch.full_like(ss_total, float("nan"))
    ok = ss_total > _EPS
    return (
        torch.where(ok, ss_lang / ss_total.clamp_min(_EPS), nan),
        torch.where(ok, ss_con / ss_total.clamp_min(_EPS), nan),
    )


def concept_centroids(
    resid: torch.Tensor,
    lang_codes: np.ndarray,
    concept_codes: np.ndarray,
    n_langs: int,
    n_concepts: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the contexts of each (language, concept), layer by layer.

    Parameters
    ----------
    resid : Tensor of float, (layers, contexts, hidden)
    lang_codes : ndarray of int, (contexts,)
        Each context's language, 0 .. n_langs - 1.
    concept_codes : ndarray of int, (contexts,)
        Each context's concept, 0 .. n_concepts - 1.
    n_langs, n_concepts : int
    device : torch.device
        Where the sums run.
    dtype : torch.dtype
        Of the sums and the result.

    Returns
    -------
    centroids : Tensor, (layers, languages, concepts, hidden)
        Zero where a (language, concept) has no context.
    present : Tensor of bool, (languages, concepts)
    """
    group = torch.as_tensor(lang_codes * n_concepts + concept_codes, dtype=torch.long, device=device)
    n_groups = n_langs * n_concepts
    counts = torch.bincount(group, minlength=n_groups).to(dtype)
    lc, _, d = resid.shape
    sums = torch.zeros((lc, n_groups, d), dtype=dtype, device=device)
    for i in range(lc):  # one layer at a time: never a float64 copy of all contexts
        sums[i].index_add_(0, group, resid[i].to(device=device, dtype=dtype))
    cent = sums / counts.clamp_min(1)[None, :, None]
    return cent.view(lc, n_langs, n_concepts, d), (counts > 0).view(n_langs, n_concepts)


def convergence_tables(
    resid_mean: torch.Tensor,
    langs: Sequence[str],
    concept_ids: Sequence[str],
    *,
    device: str | torch.device | None = None,
    max_chunk_bytes: int = 1 << 30,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Tables ``similarity`` and ``compression`` (without run_id/checkpoint) for one checkpoint.

    See the module docstring for every metric.

    Parameters
    ----------
    resid_mean : Tensor of float, (layers, contexts, hidden)
        Mean-pooled residual stream per layer (layer 0 the embeddings).
    langs : sequence of str, (contexts,)
    concept_ids : sequence of str, (contexts,)
    device : str or torch.device, optional
        Where to compute; default the input's.
    max_chunk_bytes : int
        Bound on the centroids of one chunk of layers; no result depends on it.

    Returns
    -------
    similarity : DataFrame
        (layer, lang_a, lang_b, metric, value), undefined values left out.
    compression : DataFrame
        (layer, scope, metric, value), undefined values left out.

    Raises
    ------
    ValueError
        When ``resid_mean`` is not 3-D or the labels are not one per context.
    """
    if resid_mean.ndim != 3:
        raise ValueError(f"resid_mean must be (layers, contexts, d), got shape {tuple(resid_mean.shape)}")
    n_layers, n, d = resid_mean.shape
    if len(langs) != n or len(concept_ids) != n:
        raise ValueError(
            f"langs and concept_ids must have length {n} (contexts), got {len(langs)} and {len(concept_ids)}"
        )
    dev = torch.device(device) if device is not None else resid_mean.device
    lang_list, lang_codes = np.unique(np.asarray(langs, dtype=object).astype(str), return_inverse=True)
    con_list, con_codes = np.unique(np.asarray(concept_ids, dtype=object).astype(str), return_inverse=True)
    n_l, n_c = len(lang_list), len(con_list)

    per_layer_bytes = max(1, n_l * n_c * d * 8 * 3)
    chunk = max(1, min(n_layers, max_chunk_bytes // per_layer_bytes))
    sim_parts: dict[str, list] = {k: [] for k in ("layer", "lang_a", "lang_b", "metric", "value")}
    comp_parts: dict[str, list] = {k: [] for k in ("layer", "scope", "metric", "value")}

    def add_sim(layers: np.ndarray, a: str, b: str, metric: str, values: np.ndarray) -> None:
        sim_parts["layer"].append(layers)
        sim_parts["lang_a"].append(np.full(len(layers), a, dtype=object))
        sim_parts["lang_b"].append(np.full(len(layers), b, dtype=object))
        sim_parts["metric"].append(np.full(len(layers), metric, dtype=object))
        sim_parts["value"].append(values)

    def add_comp(layers: np.ndarray, scope: str, metric: str, values: np.ndarray) -> None:
        comp_parts["layer"].append(layers)
        comp_parts["scope"].append(np.full(len(layers), scope, dtype=object))
        comp_parts["metric"].append(np.full(len(layers), metric, dtype=object))
        comp_parts["value"].append(values)

    for start in range(0, n_layers, chunk):
        stop = min(n_layers, start + chunk)
        layers = np.arange(start, stop, dtype=np.int32)
        cent, present = concept_centroids(resid_mean[start:stop], lang_codes, con_codes, n_l, n_c, device=dev)
        present_cpu = present.cpu().numpy()

        views: dict[tuple[int, bytes], _LangView] = {}

        def view(
            il: int, shared: np.ndarray, views: dict = views, cent: torch.Tensor = cent
        ) -> _LangView:  # this chunk's views and centroids, bound when defined
            # With complete concept sets every pair shares all concepts: one view per language.
            key = (il, shared.tobytes())
            if key not in views:
                views[key] = _LangView(cent[:, il, torch.as_tensor(shared, device=dev)])
            return views[key]

        for ia in range(n_l):
            for ib in range(ia + 1, n_l):
                shared = np.flatnonzero(present_cpu[ia] & present_cpu[ib])
                if len(shared) < 2:
                    continue
                metrics = pair_metrics(view(ia, shared), view(ib, shared))
                metrics["cosine_gap"] = metrics["matched_cosine"] - metrics["mismatched_cosine"]
                for m in SIMILARITY_METRICS:
                    add_sim(layers, str(lang_list[ia]), str(lang_list[ib]), m, metrics[m].cpu().numpy())

        # Effective dimensionality of the centroids, pooled and per language.
        pr_all = participation_ratio(cent[:, present]).cpu().numpy()  # (layers,)
        add_comp(layers, "all", "participation_ratio", pr_all)
        per_lang = []
        for il in range(n_l):
            have = np.flatnonzero(present_cpu[il])
            if len(have) < 2:
                continue
            pr = participation_ratio(cent[:, il, torch.as_tensor(have, device=dev)]).cpu().numpy()
            add_comp(layers, str(lang_list[il]), "participation_ratio", pr)
            per_lang.append(pr)
        if per_lang:
            with np.errstate(invalid="ignore", divide="ignore"):
                add_comp(layers, "all", "pr_ratio", pr_all / np.nanmean(np.stack(per_lang), axis=0))
        lang_share, con_share = _variance_shares(cent, present)
        add_comp(layers, "all", "language_variance_share", lang_share.cpu().numpy())
        add_comp(layers, "all", "concept_variance_share", con_share.cpu().numpy())

    return _frame(sim_parts, {"lang_a": pl.Utf8, "lang_b": pl.Utf8}), _frame(comp_parts, {"scope": pl.Utf8})


def _frame(parts: dict[str, list], strings: dict[str, pl.DataType]) -> pl.DataFrame:
    schema = {"layer": pl.Int32, **strings, "metric": pl.Utf8, "value": pl.Float64}
    if not parts["layer"]:
        return pl.DataFrame(schema=schema)
    data = {k: np.concatenate(v) for k, v in parts.items()}
    frame = pl.DataFrame(
        {k: pl.Series(k, data[k].tolist() if data[k].dtype == object else data[k], dtype=schema[k]) for k in schema}
    )
    # Undefined values (a layer without variance) are left out rather than stored as NaN.
    return frame.filter(pl.col("value").is_finite())
