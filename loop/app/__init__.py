"""The review app's pages: one module per page with `render(workspace)` (Streamlit widgets),
pure helpers in `views`, read queries in `loop.store.app_queries`, `serve` starts Streamlit.
`app.py` lists the pages."""
