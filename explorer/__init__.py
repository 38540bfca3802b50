"""crossling explorer: a read-only Streamlit app over a precomputed store."""
