"""The explorer's pages, one file each (run by st.navigation from app.py; not a `pages/` folder, which
would switch Streamlit to its legacy multipage mode)."""
