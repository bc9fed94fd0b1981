"""`evalloop schema`: the task TOML's JSON Schema, for editors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path



def make_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="the task TOML's JSON Schema, for editors (Taplo, "
                              "Even Better TOML)")
    p.add_argument("--output", "-o", help="write it to this file (default: stdout)")
    return p


def run(args: argparse.Namespace) -> int:
    from loop.core.settings_load import json_schema

    text = json.dumps(json_schema(), indent=2) + "\n"
    if args.output:
        from loop.core.cache import write_atomic
        from loop.core.paths import check_output_file

        write_atomic(check_output_file(Path(args.output), (), "--output"), text)
        print(f"wrote the task TOML's JSON Schema to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
