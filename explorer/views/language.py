"""Language: one language's concept experts, and how many it shares with other languages over training."""

from math import comb

import polars as pl
import streamlit as st

from explorer import charts
from explorer import queries as Q
from explorer.downloads import chart, table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import (
    checkpoint_label,
    checkpoint_order,
    concept_label_func,
    language_label_func,
    pick_checkpoint,
    pick_k,
    pick_language,
)
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Language", "icon": "🗣️", "url_path": "language", "section": "Explore", "order": 50}


def random_shared_share(k: int, n: int, n_langs: int, min_langs: int) -> float:
    """The mean share of a language's top-K experts that are shared experts when every language's top-K is K
    units drawn at random from N: a unit of this language's top-K is in each other language's with probability
    K / N, independently, so the share is P(Binom(L - 1, K / N) >= min_langs - 1) (exact; the per-language
    form of ``overlap_chance.shared_expected``, which counts the units of one concept instead)."""
    if n_langs < min_langs or n <= 0:
        return 0.0
    p, others, need = min(k / n, 1.0), n_langs - 1, max(min_langs - 1, 0)
    return sum(comb(others, j) * p**j * (1 - p) ** (others - j) for j in range(need, others + 1))


def sharing_chance(sizes: pl.DataFrame, top_k: int, min_langs: int) -> pl.DataFrame:
    """Per checkpoint of ``sizes`` (`explorer.queries.sharing_chance_sizes`): ``chance_share``, the mean share
    random experts would give, with the K (the stored experts' K, else the run's top_k), N and L it is
    computed from."""
    with_k = sizes.select(
        "checkpoint",
        pl.col("expert_k").fill_null(top_k).cast(pl.Int64).alias("k"),
        pl.col("n_units").cast(pl.Int64),
        pl.col("n_langs").cast(pl.Int64),
    )
    shares = [random_shared_share(k, n, n_l, min_langs) for _, k, n, n_l in with_k.rows()]
    return with_k.with_columns(pl.Series("chance_share", shares, dtype=pl.Float64))


c = ctx()
order = checkpoint_order()
fmt_concept = concept_label_func()
fmt_lang = language_label_func()

st.title("Language")
top = st.columns([2, 4, 1])
lang = pick_language(key="language.lang", where=top[0])
ckpt = pick_checkpoint(key="language.ckpt", where=top[1])
k = pick_k(key="language.k", default=5, where=top[2])

sharing = q(Q.language_sharing, c.run_id, lang)
experts = q(Q.language_experts, c.run_id, lang, ckpt, k)
top_k = c.top_k

st.subheader(f"How many of {md(fmt_lang(lang))}'s experts are shared, over training")
st.caption(
    f"Per concept: how many of its top-{top_k} experts in {md(lang)} are shared experts, "
    f"i.e. also top-{top_k} in at least {c.min_langs - 1} other language(s)."
)
if sharing.height:
    per_ck = (
        sharing.group_by(["checkpoint", "step"])
        .agg(
            (pl.col("n_shared").mean() / top_k).alias("mean_share"),
            pl.col("n_shared").mean().alias("mean_n_shared"),
            (pl.col("n_shared") > 0).sum().alias("concepts_with_shared"),
        )
        .sort(["step", "checkpoint"], nulls_last=True)
    )
    chance = sharing_chance(q(Q.sharing_chance_sizes, c.run_id), top_k, c.min_langs)
    per_ck = per_ck.join(chance.select("checkpoint", "chance_share"), on="checkpoint", how="left")
    if chance.height:
        values = sorted(set(chance["chance_share"].to_list()))
        first = chance.row(0, named=True)
        value = f"{values[0]:.3g}" if len(values) == 1 else f"{values[0]:.3g} to {values[-1]:.3g}"
        st.markdown(
            f"**Chance: random experts would give a mean share of {value}** (dashed line). If each language's "
            f"top-{first['k']} were {first['k']} units drawn at random from the {first['n_units']:,}, one of "
            f"{md(lang)}'s experts would be top-{first['k']} in at least {c.min_langs - 1} of the other "
            f"{first['n_langs'] - 1} languages with probability P(Binom({first['n_langs'] - 1}, "
            f"{first['k']}/{first['n_units']}) >= {c.min_langs - 1})."
        )
    else:
        st.caption("No chance level: this store has no overlap_chance rows (the chance stage did not run).")
    left, right = st.columns([2, 3])
    with left:
        mean_chart = charts.lines_over_checkpoints(
            per_ck,
            order,
            "mean_share",
            y_title=f"share of the top-{top_k}",
            title="Mean share of experts that are shared",
            domain=(0.0, 1.0),
            tooltip=["mean_n_shared:Q", "concepts_with_shared:Q", "chance_share:Q"],
        )
        if chance.height:
            reference = charts.chance_lines(
                per_ck.filter(pl.col("chance_share").is_not_null()),
                order,
                "chance_share",
                y_title=f"share of the top-{top_k}",
                label="random experts",
            )
            mean_chart = charts.with_chance(mean_chart, reference=reference)
        chart(mean_chart, per_ck, f"language_{lang}_sharing_mean")
    with right:
        rows = (
            sharing.group_by("concept_id")
            .agg(pl.col("n_shared").sum())
            .sort("n_shared", descending=True)["concept_id"]
            .to_list()
        )
        shown = rows[:50]
        chart(
            charts.concept_checkpoint_grid(
                sharing.filter(pl.col("concept_id").is_in(shown)),
                order,
                value="n_shared",
                rows=shown,
                max_value=top_k,
                title="shared experts per concept",
            ),
            sharing,
            f"language_{lang}_sharing_by_concept",
        )
        if len(rows) > 50:
            st.caption(f"The 50 concepts with the most sharing of {len(rows)}; the download has all.")
else:
    empty("No sharing data for this language.")

st.subheader(f"Top-{k} experts per concept in {md(lang)} at {md(checkpoint_label(ckpt))}")
if experts.height:
    view = with_neuron_links(experts)
    table(
        view,
        f"language_{lang}_experts_{ckpt}_k{k}",
        height=420,
        column_config={
            **LINK_CONFIG,
            "n_langs_topk": st.column_config.NumberColumn(
                "languages", help=f"in how many languages it is top-{top_k} (empty = fewer than {c.min_langs})"
            ),
            "langs": st.column_config.TextColumn("shared with"),
        },
    )
else:
    empty(f"No experts stored for {md(lang)} at {md(ckpt)}.")

with st.expander(f"Language identification of {md(lang)} (probe F1 per layer and checkpoint)"):
    f1 = q(Q.language_probe_f1, c.run_id, lang)
    if f1.height:
        rep = min(set(f1["representation"].to_list()), key=lambda r: (r != "mean", r))
        one = f1.filter(pl.col("representation") == rep)
        chart(
            charts.layer_checkpoint_heatmap(one, order, value="f1", title=f"F1 for {lang} ({rep} representation)"),
            f1,
            f"language_{lang}_probe_f1",
        )
    else:
        empty("No probe results for this language.")
