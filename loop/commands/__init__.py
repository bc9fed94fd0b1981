"""One module per CLI command: its parser and its handler; loop/cli.py registers them."""
