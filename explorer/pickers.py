"""The store's own lists as URL-backed pickers (checkpoint, concept, language, top-K), and how their
values are labelled (a checkpoint with its step, a concept with its label, a language with its name).

The label functions return raw text; :mod:`explorer.widgets` escapes it for the widget that shows it, and
a page that puts a label into markdown wraps it in :func:`explorer.text.md`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from explorer import queries as Q
from explorer.problems import REBUILD_HINT, StoreProblem
from explorer.store_context import ctx, q
from explorer.widgets import url_int, url_select


def checkpoint_order() -> list[str]:
    """The run's checkpoints in training order."""
    return q(Q.checkpoints, ctx().run_id)["checkpoint"].to_list()


def checkpoint_label_func() -> Callable[[str], str]:
    """Formats a checkpoint name with its step (a pure closure: AppTest calls it outside the run)."""
    ck = q(Q.checkpoints, ctx().run_id)
    steps = dict(zip(ck["checkpoint"].to_list(), ck["step"].to_list()))

    def fmt(name: str) -> str:
        step = steps.get(name)
        return f"{name} (step {step:,})" if step is not None and str(step) not in name else name

    return fmt


def checkpoint_label(name: str) -> str:
    return checkpoint_label_func()(name)


def concept_label_func() -> Callable[[str], str]:
    """Formats a concept id with its label."""
    cc = q(Q.concepts)
    labels = dict(zip(cc["concept_id"].to_list(), cc["label"].to_list()))

    def fmt(cid: str) -> str:
        label = labels.get(cid)
        return f"{label} ({cid})" if label and label != cid else cid

    return fmt


def language_label_func() -> Callable[[str], str]:
    """Formats a language code with its name."""
    ll = q(Q.languages)
    names = dict(zip(ll["lang"].to_list(), ll["name"].to_list()))

    def fmt(lang: str) -> str:
        name = names.get(lang)
        return f"{lang} · {name}" if name else lang

    return fmt


def pick_checkpoint(
    label: str = "Checkpoint", *, param: str = "ckpt", key: str, default: str | None = None, where: Any = None
) -> str:
    """A slider over training, mirrored in the URL."""
    order = checkpoint_order()
    return url_select(
        label,
        order,
        param=param,
        key=key,
        default=default if default is not None else order[-1],
        what="checkpoint",
        slider=True,
        where=where,
    )


def pick_concept(*, key: str, param: str = "concept", where: Any = None) -> str:
    ids = q(Q.concepts)["concept_id"].to_list()
    if not ids:
        raise StoreProblem("The store lists no concepts.", REBUILD_HINT)
    return url_select(
        "Concept", ids, param=param, key=key, what="concept", format_func=concept_label_func(), where=where
    )


def pick_language(*, key: str, param: str = "lang", where: Any = None, default: str | None = None) -> str:
    langs = q(Q.languages)["lang"].to_list()
    if not langs:
        raise StoreProblem("The store lists no languages.", REBUILD_HINT)
    return url_select(
        "Language",
        langs,
        param=param,
        key=key,
        what="language",
        format_func=language_label_func(),
        where=where,
        default=default,
    )


def pick_k(*, key: str, param: str = "k", default: int = 10, where: Any = None) -> int:
    top_k = ctx().top_k
    return url_int(
        "Top-K",
        param=param,
        key=key,
        min_value=1,
        max_value=top_k,
        default=min(default, top_k),
        what="top-K",
        where=where,
        help=f"How many of the stored top-{top_k} units per language to show.",
    )
