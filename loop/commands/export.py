"""`evalloop export`: an adapter with a model card (or merged), benchmark results as
lm-eval JSON, an eval run as CSV/Parquet, training data as a Hugging Face dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from loop.commands.common import add_common, print_json, protected_outputs
from loop.core.errors import EvalloopError


def make_parser(subparsers) -> argparse.ArgumentParser:
    from loop.core.settings import DEFAULT_MODEL

    p = subparsers.add_parser("export", help="an adapter with a model card (or merged); "
                              "benchmark results as lm-eval JSON; an eval run as CSV/Parquet; "
                              "training data as a Hugging Face dataset")
    add_common(p, task=False)
    p.add_argument("--adapter", default=None, help="ADAPTER_DIR or BASE+ADAPTER_DIR (or, with "
                   "--out, a stored model name or id prefix) to export or merge")
    p.add_argument("--base", default=DEFAULT_MODEL)
    p.add_argument("--merge", default=None, metavar="OUT_DIR", help="merged checkpoint directory")
    p.add_argument("--out", dest="adapter_out", default=None, metavar="DIR",
                   help="with --adapter (a BASE+ADAPTER_DIR, adapter dir, stored model name or id "
                        "prefix): a PEFT adapter folder with a model card built from the store")
    p.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                   help="with --adapter --out: upload the folder to this Hugging Face model repo "
                        "(token from HF_TOKEN; a new repo is created private)")
    p.add_argument("--benchmarks", default=None, metavar="MODEL",
                   help="a model's stored benchmark results (write OUT with --format lm-eval)")
    p.add_argument("--failures", default=None, metavar="RUN",
                   help="an eval run id (or prefix, or 'latest'): one row per item, with "
                        "reference, prediction, failed checks and signatures")
    p.add_argument("--format", default=None, choices=["lm-eval", "csv", "parquet"],
                   help="output format (default: from OUT's suffix)")
    p.add_argument("--data", default=None, metavar="JSONL", help="training data to publish")
    p.add_argument("--hf-card", default=None, metavar="OUT_DIR",
                   help="with --data: a datasets-loadable folder with a README.md card")
    p.add_argument("out", nargs="?", default=None, metavar="OUT",
                   help="output file for --benchmarks / --failures")
    return p


def run(args: argparse.Namespace) -> int:
    from loop import exports

    mode = _export_mode(args)
    _check_export_paths(args, mode)
    if mode == "adapter":
        return _export_adapter(args)
    if mode == "merge":
        from loop.train.sft import export_merged

        out = export_merged(args.adapter if "+" in args.adapter
                            else f"{args.base}+{args.adapter}", args.merge)
        print(f"merged Hugging Face checkpoint written to {out}")
        return 0
    if mode == "data":
        out, n = exports.export_hf_dataset(Path(args.data), Path(args.hf_card))
        what = f"Hugging Face dataset folder ({n} rows, README.md card)"
    else:
        from loop.store.db import Store

        with Store(args.workspace, read_only=True) as store:
            if mode == "benchmarks":
                out, n = exports.export_lm_eval(store, args.benchmarks, Path(args.out))
                what = f"lm-eval results JSON ({n} tasks and groups)"
            else:
                out, n = exports.export_items(store, args.failures, Path(args.out), args.format)
                what = f"{args.format} of an eval run's items ({n} rows)"
    if args.json:
        print_json({"written": str(out), "rows": n, "mode": mode})
    else:
        print(f"{what} written to {out}")
    return 0


def _check_export_paths(args: argparse.Namespace, mode: str) -> None:
    """Every path an export writes, checked before anything is read or written."""
    from loop.core.paths import check_output_dir, check_output_file, file_problem

    protected, roots = protected_outputs(args), [Path(args.workspace)]
    if mode in ("benchmarks", "failures"):
        check_output_file(Path(args.out), protected)
    elif mode == "data":
        if problem := file_problem(Path(args.data)):
            raise EvalloopError(f"--data {args.data} {problem}.")
        out = check_output_dir(Path(args.hf_card), protected, roots, "--hf-card")
        for name in ("data/train.jsonl", "README.md", "manifest.json"):
            check_output_file(out / name, protected, "--hf-card")
    elif mode == "merge":
        check_output_dir(Path(args.merge), protected, roots, "--merge")
    elif mode == "adapter":
        check_output_dir(Path(args.adapter_out), protected, roots, "--out")


def _export_adapter(args: argparse.Namespace) -> int:
    """A PEFT folder + model card from the store; optionally pushed to the Hugging Face Hub."""
    from loop.adapter_export import export_adapter, push_to_hub
    from loop.store.db import Store

    with Store(args.workspace, read_only=True) as store:
        out, model = export_adapter(store, args.adapter, Path(args.adapter_out), args.base)
    url = push_to_hub(out, args.push_to_hub) if args.push_to_hub else None
    if args.json:
        print_json({"written": str(out), "mode": "adapter", "model_id": model["model_id"],
                     "pushed": url})
    else:
        print(f"PEFT adapter folder with a model card (README.md) written to {out}")
        if url:
            print(f"uploaded to {args.push_to_hub} (a new repo is private): {url}")
    return 0


def _export_mode(args: argparse.Namespace) -> str:
    """Which export the flags ask for; every conflict or gap in one message. --format defaults
    to the OUT file's suffix."""
    from loop.exports import FORMATS

    modes = [m for m, flag in (("merge", args.adapter), ("benchmarks", args.benchmarks),
                               ("failures", args.failures), ("data", args.data)) if flag]
    if len(modes) != 1:
        raise EvalloopError("evalloop export needs exactly one of --adapter (with --out or "
                            "--merge), "
                            "--benchmarks MODEL, --failures RUN|latest, --data JSONL"
                            + (f"; got {', '.join('--' + m for m in modes)}." if modes else "."))
    mode, errors = modes[0], []
    if mode == "merge" and bool(args.merge) == bool(args.adapter_out):
        errors.append("--adapter needs --out DIR (PEFT folder + model card) or --merge OUT_DIR "
                      "(merged checkpoint), one of them")
    elif mode == "merge" and args.adapter_out:
        mode = "adapter"
    if args.push_to_hub and mode != "adapter":
        errors.append("--push-to-hub REPO_ID goes with --adapter MODEL --out DIR")
    if args.adapter_out and mode not in ("merge", "adapter"):
        errors.append(f"--out DIR belongs to --adapter, not --{mode}")
    if mode == "data" and not args.hf_card:
        errors.append("--data needs --hf-card OUT_DIR")
    if mode in ("benchmarks", "failures"):
        wanted = ("lm-eval",) if mode == "benchmarks" else ("csv", "parquet")
        if not args.out:
            errors.append(f"--{mode} needs an output file (OUT)")
        elif args.format is None:
            args.format = next((f for f in wanted if args.out.endswith(FORMATS[f])), None)
        if args.out and args.format not in wanted:
            errors.append(f"--{mode} writes --format {' or '.join(wanted)}"
                          + (f", not {args.format}" if args.format else
                             " (none given and OUT's suffix names none)"))
    elif args.out or args.format:
        errors.append(f"OUT and --format belong to --benchmarks/--failures, not --{mode}")
    if errors:
        raise EvalloopError("Invalid export: " + "; ".join(errors) + ".")
    return mode
