"""Plotly figure builders: plain functions that take results and return figures (no Streamlit)."""
