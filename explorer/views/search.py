"""Search: a word in any language finds the concepts whose contexts contain it and the units whose top
contexts contain it (case-insensitive substring, so it works in scripts without spaces too)."""

import streamlit as st

from explorer import queries as Q
from explorer.downloads import table
from explorer.links import LINK_CONFIG, with_neuron_links
from explorer.pickers import checkpoint_label, concept_label_func, pick_checkpoint
from explorer.problems import empty
from explorer.store_context import ctx, q
from explorer.text import md, md_code

# Where the navigation lists this page (read by explorer/pages.py without running the script).
PAGE = {"title": "Search", "icon": "🔎", "url_path": "search", "section": "Explore", "order": 70}

c = ctx()
fmt_concept = concept_label_func()

st.title("Search")
word = st.text_input(
    "A word in any language",
    key="search.word",
    value=st.query_params.get("q", ""),
    help="Matched inside the stored contexts, ignoring case.",
)
word = (word or "").strip()
if word:
    st.query_params["q"] = word
ckpt = pick_checkpoint("Checkpoint (for units)", key="search.ckpt")

if not word:
    st.info("Type a word (e.g. Montag, 月曜日, mars) to find the concepts and units whose contexts contain it.")
    st.stop()

concepts = q(Q.search_concepts, word, 50)
st.subheader(f"Concepts whose contexts contain {md_code(word)}")
if concepts.height:
    st.markdown(", ".join(md(fmt_concept(x)) for x in concepts["concept_id"].to_list()))
    table(concepts, "search_concepts")
else:
    empty(f"No stored context contains {md_code(word)}.")

units = q(Q.search_units, c.run_id, ckpt, word, 50)
st.subheader(f"Units whose top contexts at {md(checkpoint_label(ckpt))} contain {md_code(word)}")
if units.height:
    table(with_neuron_links(units), "search_units", column_config=LINK_CONFIG)
else:
    empty("No unit's stored top contexts contain it at this checkpoint.")
