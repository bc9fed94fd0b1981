"""evalloop review app (Streamlit): overview, failures, arena, leaderboard, benchmarks & training.

    streamlit run app.py -- --workspace W     (or: evalloop app --workspace W, binds 127.0.0.1)

The app itself is the packaged module `loop/app/main.py` (so an installed wheel can serve it);
this file is the entry at the top of a checkout.
"""

from loop.app.main import main

main()
