"""Language-identification probes: per layer, a logistic regression that predicts the input language.

For each layer and representation, the probe is fitted on a stratified split for every seed; accuracy,
macro-F1 and per-language F1 are averaged over seeds (the accuracy's standard deviation is kept). Next to
each accuracy stand its chance levels (issue 14.5): the majority-class baseline of the test split, and a control
probe fitted on shuffled language labels (NeuroX's control tasks: selectivity = accuracy - control accuracy),
and a bootstrap interval over the test contexts of every seed. For the
token-level representation each seed also has its own sampled token per context (``precompute.extract``
draws positions per seed, start and padding tokens excluded), so the seeds vary the tokens as well as the
split (the paper: token-level hidden states, three seeds).
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from precompute.analysis.chance import bootstrap_ci


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    test_size: float,
    C: float = 1.0,
    max_iter: int = 300,
    max_train: int = 0,
) -> dict:
    """Fit one probe on a stratified split; return accuracy, macro-F1, per-class F1 and sizes."""
    classes = np.unique(labels)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    if max_train and len(y_train) > max_train:
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=max_train, random_state=seed, stratify=y_train
        )
    # Newton-CG converges in ~10 iterations where L-BFGS needs hundreds; one BLAS thread, because
    # these matrices are small and threads that spin on a busy machine slow the fit tenfold.
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, solver="newton-cg")
    )
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(x_train, y_train)
    pred = probe.predict(x_test)
    per_class = f1_score(y_test, pred, labels=classes, average=None, zero_division=0)
    values, n_each = np.unique(y_train, return_counts=True)
    majority = values[np.argmax(n_each)]  # the class a label-blind predictor would always say
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "correct": (pred == y_test).tolist(),  # n_test bools: what the bootstrap resamples (a list: comparable)
        "majority_baseline": float(np.mean(y_test == majority)),
        "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "per_class": dict(zip(classes.tolist(), per_class.tolist())),
        "n_train": len(y_train),
        "n_test": len(y_test),
    }


def probe_tables(
    representations: dict[str, torch.Tensor],
    langs: np.ndarray,
    *,
    seeds: list[int],
    test_size: float,
    C: float = 1.0,
    max_iter: int = 300,
    max_train: int = 0,
    control: bool = True,
    n_resamples: int = 0,
    bootstrap_seed: int = 0,
    progress=None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Probe every layer of every representation.

    ``control``: also fit one probe per layer (first seed) on the language labels shuffled with that seed, whose
    test accuracy is ``control_accuracy`` (what the probe reaches by memorising, not by reading language).
    ``n_resamples`` > 0: ``accuracy_lo`` / ``accuracy_hi``, the 95 % percentile bootstrap interval of the mean
    accuracy, resampling the test contexts of all seeds pooled ((n_resamples, seeds x n_test) at once).

    A representation is a (layers, contexts, d) tensor shared by all seeds, or a (len(seeds), layers,
    contexts, d) tensor whose i-th slice is seed ``seeds[i]``'s features (token probes: one sampled token per
    context and seed). Returns (probe_results rows, probe_per_language rows) without run_id/checkpoint.
    """
    results, per_language = [], []
    for rep, tensor in representations.items():
        if tensor.ndim == 4 and tensor.shape[0] != len(seeds):
            raise ValueError(f"representation {rep!r} has {tensor.shape[0]} seed slices for {len(seeds)} seeds")
        if tensor.ndim not in (3, 4):
            raise ValueError(f"representation {rep!r} must be 3-D or 4-D, got shape {tuple(tensor.shape)}")
        n_layers = tensor.shape[-3]
        for layer in range(n_layers):
            fits = [
                fit_probe(
                    (tensor[i, layer] if tensor.ndim == 4 else tensor[layer]).float().numpy(),
                    langs, seed=s, test_size=test_size, C=C, max_iter=max_iter, max_train=max_train,
                )
                for i, s in enumerate(seeds)
            ]
            acc = np.array([f["accuracy"] for f in fits])
            lo = hi = None
            if n_resamples > 0:
                _, lo, hi = bootstrap_ci(
                    np.concatenate([f["correct"] for f in fits]), n_resamples=n_resamples, seed=bootstrap_seed
                )
            control_accuracy = None
            if control:
                features = (tensor[0, layer] if tensor.ndim == 4 else tensor[layer]).float().numpy()
                shuffled = np.random.default_rng(seeds[0]).permutation(langs)
                control_accuracy = fit_probe(
                    features, shuffled, seed=seeds[0], test_size=test_size, C=C, max_iter=max_iter,
                    max_train=max_train,
                )["accuracy"]
            results.append(
                {
                    "layer": layer,
                    "representation": rep,
                    "accuracy": float(acc.mean()),
                    "accuracy_std": float(acc.std()),
                    "macro_f1": float(np.mean([f["macro_f1"] for f in fits])),
                    "n_train": fits[0]["n_train"],
                    "n_test": fits[0]["n_test"],
                    "n_seeds": len(fits),
                    "majority_baseline": float(np.mean([f["majority_baseline"] for f in fits])),
                    "control_accuracy": control_accuracy,
                    "accuracy_lo": lo,
                    "accuracy_hi": hi,
                }
            )
            for lang in fits[0]["per_class"]:
                per_language.append(
                    {
                        "layer": layer,
                        "representation": rep,
                        "lang": lang,
                        "f1": float(np.mean([f["per_class"][lang] for f in fits])),
                    }
                )
            if progress is not None:
                progress()
    schema = {"majority_baseline": pl.Float64, "control_accuracy": pl.Float64, "accuracy_lo": pl.Float64,
              "accuracy_hi": pl.Float64}
    return pl.DataFrame(results, schema_overrides=schema), pl.DataFrame(per_language)
