"""The review app's pages: one module per page with `render(workspace)` (Streamlit widgets),
pure helpers in `views`, read queries in `loop.store.app_queries`, `serve` starts Streamlit.
`main.py` lists the pages and is the script `evalloop app` serves (`app.py` at the top of a
checkout calls it too)."""

from pathlib import Path

MAIN_SCRIPT = Path(__file__).resolve().parent / "main.py"
