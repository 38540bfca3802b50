"""crossling explorer: the Streamlit entry point (``explorer STORE`` runs ``streamlit run`` on this).

Opens the store named by $CROSSLING_STORE (default: data/demo.duckdb) read-only, shows which store
and run are open in the sidebar, and routes to the pages declared in ``explorer/pages.py`` (one script each in
``explorer/views/``). Any problem with the store becomes one message with what to do, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# Icons are emoji, drawn by the browser: a Material-symbol page icon becomes a favicon that the browser
# fetches from a public font CDN, and the explorer makes no request off this machine.
st.set_page_config(page_title="crossling explorer", page_icon="🌐", layout="wide")

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    # `streamlit run explorer/app.py` from a checkout that is not pip-installed.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import downloads
from explorer.pages import PAGES, SECTIONS
from explorer.paths import store_path
from explorer.problems import StoreProblem, show_problem, show_unexpected
from explorer.sidebar import sidebar
from explorer.store_context import open_context, set_ctx
from explorer.text import md_code

page = st.navigation(
    {
        section: [
            st.Page(p.source, title=p.title, icon=p.icon, url_path=p.url_path, default=p.default)
            for p in PAGES
            if p.section == section
        ]
        for section in SECTIONS
    }
)

try:
    ctx = open_context()
except StoreProblem as problem:
    st.title("crossling explorer")
    show_problem(problem)
    st.caption(f"Store path: {md_code(str(store_path()))}")
    st.stop()
except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
    st.title("crossling explorer")
    show_unexpected(exc)
    st.stop()

set_ctx(ctx)
downloads.start_rerun()
try:
    sidebar(ctx)
    page.run()
except StoreProblem as problem:
    show_problem(problem)
except Exception as exc:  # noqa: BLE001
    show_unexpected(exc)
