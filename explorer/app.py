"""crossling explorer: the Streamlit entry point (``explorer STORE`` runs ``streamlit run`` on this).

Opens the store named by $CROSSLING_STORE (default: data/demo.duckdb) read-only, shows which store
and run are open in the sidebar, and routes to one page per file in ``explorer/pages``. Any problem
with the store becomes one message with what to do, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="crossling explorer", page_icon=":material/hub:", layout="wide")

if __package__ in (None, "") and str(Path(__file__).resolve().parents[1]) not in sys.path:
    # `streamlit run explorer/app.py` from a checkout that is not pip-installed.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from explorer import common  # noqa: E402

PAGES = {
    "Explore": [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/probes.py", title="Language probes", icon=":material/translate:"),
        st.Page("views/concepts.py", title="Concepts", icon=":material/lightbulb:"),
        st.Page("views/neuron.py", title="Neuron", icon=":material/neurology:"),
        st.Page("views/language.py", title="Language", icon=":material/language:"),
        st.Page("views/compare.py", title="Compare", icon=":material/compare_arrows:"),
    ],
    "The rest of the paper": [
        st.Page("views/compression.py", title="Compression", icon=":material/compress:"),
        st.Page("views/language_neurons.py", title="Language neurons", icon=":material/record_voice_over:"),
        st.Page("views/steering.py", title="Steering", icon=":material/explore:"),
    ],
}

page = st.navigation(PAGES)

try:
    ctx = common.open_context()
except common.StoreProblem as problem:
    st.title("crossling explorer")
    common.show_problem(problem)
    st.caption(f"Store path: {common.md_code(str(common.store_path()))}")
    st.stop()
except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
    st.title("crossling explorer")
    common.show_unexpected(exc)
    st.stop()

st.session_state[common._CTX_KEY] = ctx
try:
    common.sidebar(ctx)
    page.run()
except common.StoreProblem as problem:
    common.show_problem(problem)
except Exception as exc:  # noqa: BLE001
    common.show_unexpected(exc)
