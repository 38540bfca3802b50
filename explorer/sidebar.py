"""The sidebar: which store is open, read-only, and its provenance (model, checkpoints, run, versions)."""

from __future__ import annotations

import contextlib
import json

import polars as pl
import streamlit as st

from explorer import queries as Q
from explorer.store_context import Ctx, q
from explorer.text import md, md_code


def sidebar(c: Ctx) -> None:
    """Which store is open, and its provenance."""
    runs = q(Q.runs)
    run = runs.filter(pl.col("run_id") == c.run_id).row(0, named=True)
    meta = dict(q(Q.meta).iter_rows())
    ck = q(Q.checkpoints, c.run_id)
    size_mb = c.version[1] / 1e6
    with st.sidebar:
        st.markdown(f"**Store** {md_code(c.name)}")
        st.caption(f"{md(c.path)}  \n{size_mb:,.1f} MB · opened read-only")
        st.markdown(f"**Model** {md_code(run['model_id'])}")
        first, last = ck.row(0, named=True), ck.row(-1, named=True)
        st.caption(
            f"{ck.height} checkpoint{'s' if ck.height != 1 else ''}: {md_code(first['checkpoint'])} … "
            f"{md_code(last['checkpoint'])}  \ntop-K = {c.top_k} · shared = top-K in ≥ {c.min_langs} languages"
        )
        with st.expander("Provenance"):
            if run.get("model_card"):
                st.text(run["model_card"])  # free text from the store: shown as written, never as markdown
            rows = {
                "run": c.run_id,
                "crossling": meta.get("crossling_version", "?"),
                "schema": meta.get("schema_version", "?"),
                "store created": meta.get("created_at", "?"),
                "run started": str(run.get("started_at") or "?"),
                "run finished": str(run.get("finished_at") or "not finished"),
                "device / dtype": f"{run.get('device') or '?'} / {run.get('dtype') or '?'}",
                "concept set sha256": (run.get("concept_set_sha256") or "?")[:16] + "…",
            }
            st.markdown("\n".join(f"- **{k}**: {md_code(v)}" for k, v in rows.items()))
            with contextlib.suppress(json.JSONDecodeError, TypeError):
                st.caption("Run config")
                st.json(json.loads(run["config_json"]), expanded=False)
            with contextlib.suppress(json.JSONDecodeError, TypeError):
                st.caption("Package versions")
                st.json(json.loads(run["packages_json"]), expanded=False)
