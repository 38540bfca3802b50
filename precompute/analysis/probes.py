"""Language-identification probes: per layer, a logistic regression that predicts the input language.

For each layer and representation, the probe is fitted on a stratified split for every seed; accuracy,
macro-F1 and per-language F1 are averaged over seeds (the accuracy's standard deviation is kept). Next to
each accuracy stand its chance levels: the majority-class baseline of the test split; for token
probes a control task in Hewitt & Liang's sense (2019, "Designing and Interpreting Probes with Control Tasks"):
every token type gets a fixed random language, and the same probe on the same features and split learns that;
selectivity = accuracy - control accuracy is the part of the accuracy that memorising token identities does not
explain (`control_labels`); and a hierarchical bootstrap interval over seeds
and test contexts (`precompute.analysis.chance.hierarchical_bootstrap_ci`). For the
token-level representation each seed also has its own sampled token per context (``precompute.extract``
draws positions per seed, start and padding tokens excluded), so the seeds vary the tokens as well as the
split (the paper: token-level hidden states, three seeds).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

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

from precompute.analysis.chance import hierarchical_bootstrap_ci


def fit_probe(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    seed: int,
    test_size: float,
    C: float,
    max_iter: int,
    max_train: int,
    stratify: np.ndarray | None = None,
) -> dict:
    """Fit one probe (standardised features, logistic regression) on a stratified split and score its test split.

    Parameters
    ----------
    features : ndarray of float, (contexts, hidden)
    labels : ndarray, (contexts,)
        The classes to predict (languages, or the control task's labels).
    seed : int
        Seed of the split and of the ``max_train`` subsample.
    test_size : float
        Share of the contexts held out (``[probes] test_size``).
    C : float
        Inverse regularisation strength (``[probes] C``).
    max_iter : int
        Newton-CG iterations at most (``[probes] max_iter``).
    max_train : int
        Training contexts at most, a stratified subsample (``[probes] max_train``); 0: all.
    stratify : ndarray, (contexts,), optional
        The labels the split (and the subsample) is stratified on, default ``labels``; the control task passes
        the language labels, so its probe sees exactly the LID probe's split of that seed.

    Returns
    -------
    dict
        accuracy, correct (n_test bools, which test contexts it got right), majority_baseline, macro_f1,
        per_class (class -> F1), n_train, n_test.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    strata = labels if stratify is None else np.asarray(stratify)
    # Split indices, not arrays: the split depends only on n, the strata and the seed (the same as splitting
    # (features, labels) with stratify=strata).
    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=strata)
    if max_train and len(train) > max_train:
        train, _ = train_test_split(train, train_size=max_train, random_state=seed, stratify=strata[train])
    x_train, x_test, y_train, y_test = features[train], features[test], labels[train], labels[test]
    # Newton-CG converges in ~10 iterations where L-BFGS needs hundreds; one BLAS thread, because
    # these matrices are small and threads that spin on a busy machine slow the fit tenfold.
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, solver="newton-cg"))
    if np.unique(y_train).size < 2:  # one class to learn (a control task can draw that): the probe says it
        pred = np.full(len(y_test), y_train[0])
    else:
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


#: Seed of the control task's label per token type (fixed: the control task is part of the store).
CONTROL_SEED = 0


def _type_uniform(types: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per token type, a fixed function of (type, seed): splitmix64 of the two."""
    z = np.asarray(types).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 * (seed + 1) % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def control_labels(types: np.ndarray, langs: np.ndarray, *, seed: int = CONTROL_SEED) -> np.ndarray:
    """Hewitt & Liang's control task for LID: each token type's fixed random language, per context.

    Every type gets one language drawn from the empirical language distribution of ``langs`` (inverse CDF of a
    uniform that is a fixed function of the type id and ``seed``, so a type keeps its label whichever contexts,
    seeds or checkpoints it appears in), and each context gets its type's label. A probe reaches the control
    task's accuracy only by telling token identities apart and memorising their labels from training, which is
    the capacity an LID probe could also use without reading language: selectivity = accuracy - control
    accuracy (high selectivity: the accuracy is not explained by token identity).

    Parameters
    ----------
    types : ndarray of int, (contexts,)
        The token id of each context's sampled token.
    langs : ndarray of str, (contexts,)
        The language labels, whose empirical distribution the random languages follow.
    seed : int
        Picks the mapping from types to languages; fixed (`CONTROL_SEED`), since the control is part of the store.

    Returns
    -------
    ndarray, (contexts,)
        Each context's control label, one of ``langs``' values.
    """
    classes, counts = np.unique(np.asarray(langs), return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    pick = np.searchsorted(cdf, _type_uniform(types, seed), side="right")
    return classes[np.minimum(pick, classes.size - 1)]


def probe_tables(
    representations: dict[str, torch.Tensor],
    langs: np.ndarray,
    *,
    seeds: list[int],
    test_size: float,
    C: float,
    max_iter: int,
    max_train: int,
    control: bool,
    n_resamples: int,
    token_types: dict[str, np.ndarray] | None = None,
    bootstrap_seed: int = 0,
    progress: Callable[[], object] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Probe every layer of every representation, with its chance levels.

    The control task (`control_labels`, Hewitt & Liang) is the first seed's probe (same features, split, C,
    max_iter, max_train) on its token types' random languages; its test accuracy is ``control_accuracy``. A
    representation without token types gets NULL: the sentence mean pools every token of the context, so it has
    no token type; its only "type" is the context itself, and a random label per context is the shuffled-label
    control, whose test accuracy is chance by construction (test contexts are unseen types) and measures nothing
    about the probe.

    Parameters
    ----------
    representations : dict of str to Tensor, (layers, contexts, hidden) or (seeds, layers, contexts, hidden)
        Residual-stream features per representation name (layer 0 the embeddings): one tensor shared by all
        seeds, or one slice per seed (token probes: one sampled token per context and seed).
    langs : ndarray of str, (contexts,)
    seeds : list of int, (seeds,)
        ``[probes] seeds``: one split (and token draw) per seed.
    test_size, C, max_iter, max_train : float, float, int, int
        ``[probes]`` settings, see `fit_probe`.
    control : bool
        ``[probes] control``: fit the control task for every representation with ``token_types``.
    n_resamples : int
        ``[analysis] bootstrap``: > 0 gives ``accuracy_lo`` / ``accuracy_hi``, the 95 % interval of the mean
        accuracy over seeds from `hierarchical_bootstrap_ci`; 0 leaves them NULL.
    token_types : dict of str to ndarray of int, (seeds, contexts) or (contexts,), optional
        Per representation, the token id of the sampled token per seed (``(contexts,)`` for a 3-D
        representation).
    bootstrap_seed : int
        Seed of the bootstrap.
    progress : callable, optional
        Called once per (representation, layer).

    Returns
    -------
    probe_results : DataFrame
        One row per (layer, representation) without run_id/checkpoint.
    probe_per_language : DataFrame
        (layer, representation, lang, f1), F1 averaged over seeds.

    Raises
    ------
    ValueError
        For a representation that is not 3-D or 4-D, seed slices that are not one per seed, or token types
        that are not one per context.
    """
    results, per_language = [], []
    types_of: dict[str, np.ndarray] = {}  # representation -> (contexts,) control labels of the first seed
    for rep, tensor in representations.items():
        if tensor.ndim == 4 and tensor.shape[0] != len(seeds):
            raise ValueError(f"representation {rep!r} has {tensor.shape[0]} seed slices for {len(seeds)} seeds")
        if tensor.ndim not in (3, 4):
            raise ValueError(f"representation {rep!r} must be 3-D or 4-D, got shape {tuple(tensor.shape)}")
        if control and token_types and token_types.get(rep) is not None:
            ids = np.asarray(token_types[rep])
            first = ids[0] if ids.ndim == 2 else ids  # the first seed's sampled tokens: its features' tokens
            if first.shape != (len(langs),) or (ids.ndim == 2 and tensor.ndim == 4 and ids.shape[0] != len(seeds)):
                raise ValueError(f"token types of {rep!r} have shape {ids.shape}, expected one per context")
            types_of[rep] = control_labels(first, langs)
        n_layers = tensor.shape[-3]
        for layer in range(n_layers):
            fits = [
                fit_probe(
                    (tensor[i, layer] if tensor.ndim == 4 else tensor[layer]).float().numpy(),
                    langs,
                    seed=s,
                    test_size=test_size,
                    C=C,
                    max_iter=max_iter,
                    max_train=max_train,
                )
                for i, s in enumerate(seeds)
            ]
            acc = np.array([f["accuracy"] for f in fits])
            lo = hi = None
            if n_resamples > 0:
                _, lo, hi = hierarchical_bootstrap_ci(
                    [f["correct"] for f in fits], n_resamples=n_resamples, seed=bootstrap_seed
                )
            control_accuracy = None
            if control and rep in types_of:
                features = (tensor[0, layer] if tensor.ndim == 4 else tensor[layer]).float().numpy()
                control_accuracy = fit_probe(
                    features,
                    types_of[rep],
                    seed=seeds[0],
                    test_size=test_size,
                    C=C,
                    max_iter=max_iter,
                    max_train=max_train,
                    stratify=langs,
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
    schema = {
        "majority_baseline": pl.Float64,
        "control_accuracy": pl.Float64,
        "accuracy_lo": pl.Float64,
        "accuracy_hi": pl.Float64,
    }
    return pl.DataFrame(results, schema_overrides=schema), pl.DataFrame(per_language)
