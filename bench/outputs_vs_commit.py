"""Did a change alter what the model is asked, what it answers or how that is scored? The same
model, split and items evaluated by this tree and by an older commit, item by item.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/outputs_vs_commit.py --commit f9c6e64 \
        [--tasks ../shared/real-tasks/*/task.toml] [--split dev] [--limit 60] \
        [--model smollm2-135m-instruct] [--workspace /tmp/evalloop-ovc] \
        [--train-steps 8 --train-rows 128 [--set micro_batch_tokens=1024]]

The commit is checked out in a temporary git worktree and both sides run `evaluate` in their own
process (PYTHONPATH = that side's tree, the same venv), each in a fresh workspace. Printed per
task: items compared, identical prompts, identical outputs, pass rate on each side and the items
whose verdict changed (with both outputs), so a difference can be explained, not just counted.
Generation is greedy, so identical prompts should give identical outputs on one machine.

With `--train-steps N` each side first trains a LoRA for N steps on the first `--train-rows` pool
rows with the task's [training] settings and the same seed (each tree reads them its own way),
then evaluates base+adapter: the same seeds should train the same adapter. The two sides'
training settings are printed when they differ (a changed default explains changed outputs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_TASKS = REPO.parent / "shared" / "real-tasks"

# Run inside each side's tree: only names both old and new code have (load_task, Store,
# evaluate(...).outcomes/.run_id, the runs / run_items / predictions tables).
SIDE = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from loop.data.tasks import load_task
from loop.evaluation.evaluate import evaluate
from loop.store.db import Store
task_path, workspace, model, split, limit, steps, rows, overrides = sys.argv[1:9]
task = load_task(task_path)
config = None
if int(steps):
    import dataclasses, os
    from loop.train.sft import train_adapter
    try:  # this tree: settings parsed once, on the Task
        config, system = task.settings.training, task.settings.system_prompt
        config = config.model_copy(update={"max_steps": int(steps), **json.loads(overrides)})
    except AttributeError:  # older trees: TrainConfig read from the task's [training] section
        from loop.train.config import TrainConfig
        config, system = TrainConfig.from_section(task.config.section("training")), \
            task.config.system_prompt
        config = dataclasses.replace(config, max_steps=int(steps), **json.loads(overrides))
    pool = list(task.split("train"))[:int(rows)]
    trained = train_adapter(model, pool, os.path.join(workspace, "adapter"), config,
                            progress=False, system_prompt=system)
    model = model + "+" + trained.adapter_dir
    config = {k: str(v) for k, v in (config.model_dump() if hasattr(config, "model_dump")
                                     else dataclasses.asdict(config)).items()}
    config["train_loss"] = trained.train_loss
with Store(workspace) as store:
    summary = evaluate(store, task, model, split, limit=int(limit), progress=False)
    rows = store.query(
        "SELECT ri.example_id, p.prompt, p.output FROM run_items ri "
        "JOIN predictions p USING (prediction_id) WHERE ri.run_id = ?", [summary.run_id])
print(json.dumps({"config": config,
                  "items": {r["example_id"]: {"prompt": r["prompt"], "output": r["output"],
                                              "passed": summary.outcomes[r["example_id"]]}
                            for r in rows}}))
"""


def run_side(tree: Path, task: Path, workspace: Path, model: str, split: str,
             limit: int, steps: int = 0, rows: int = 0, overrides: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, "-c", SIDE, str(task), str(workspace), model, split,
                           str(limit), str(steps), str(rows), json.dumps(overrides or {})],
                          cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{tree} failed on {task}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(old_side: dict, new_side: dict) -> dict:
    old, new = old_side["items"], new_side["items"]
    common = sorted(set(old) & set(new))
    changed = [i for i in common if old[i]["passed"] != new[i]["passed"]]
    return {
        "n": len(common), "only_old": len(set(old) - set(new)),
        "only_new": len(set(new) - set(old)),
        "same_prompt": sum(old[i]["prompt"] == new[i]["prompt"] for i in common),
        "same_output": sum(old[i]["output"] == new[i]["output"] for i in common),
        "pass_old": sum(old[i]["passed"] for i in common),
        "pass_new": sum(new[i]["passed"] for i in common),
        "verdict_changed": [{"id": i, "old": old[i]["passed"], "new": new[i]["passed"],
                             "output_old": old[i]["output"][:160],
                             "output_new": new[i]["output"][:160]} for i in changed],
        "config_differs": {k: (old_side["config"].get(k), v)
                           for k, v in (new_side["config"] or {}).items()
                           if (old_side["config"] or {}).get(k) != v}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", required=True, help="the older tree to compare with")
    parser.add_argument("--tasks", nargs="+", type=Path,
                        default=sorted(REAL_TASKS.glob("*/task.toml")))
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--workspace", type=Path, default=Path("/tmp/evalloop-ovc"))
    parser.add_argument("--train-steps", type=int, default=0,
                        help="train a LoRA this many steps on each side first (0: the model as is)")
    parser.add_argument("--train-rows", type=int, default=128)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="[training] settings for both sides (e.g. a default that changed)")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    old_tree = Path(tempfile.mkdtemp(prefix="evalloop-old-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-f", "--detach", str(old_tree),
                    args.commit], check=True, capture_output=True)
    results = {}
    try:
        for task in args.tasks:
            task = task.resolve()
            sides = {}
            for side, tree in (("old", old_tree), ("new", REPO)):
                ws = args.workspace / task.parent.name / side
                shutil.rmtree(ws, ignore_errors=True)
                sides[side] = run_side(tree, task, ws, args.model, args.split, args.limit,
                                       args.train_steps, args.train_rows, overrides)
            r = results[task.parent.name] = compare(sides["old"], sides["new"])
            print(f"{task.parent.name}: {r['n']} items, prompts identical {r['same_prompt']}, "
                  f"outputs identical {r['same_output']}, pass {r['pass_old']} -> "
                  f"{r['pass_new']}, verdicts changed {len(r['verdict_changed'])}"
                  + (f", only in one side {r['only_old']}/{r['only_new']}"
                     if r["only_old"] or r["only_new"] else ""), flush=True)
            if r["config_differs"]:
                print(f"    training settings differ (old, new): {r['config_differs']}")
            for c in r["verdict_changed"][:5]:
                print(f"    {c['id']}: {c['old']} -> {c['new']}  {c['output_new']!r}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old_tree)],
                       capture_output=True)
    args.workspace.mkdir(parents=True, exist_ok=True)
    (args.workspace / "results.json").write_text(json.dumps(results, indent=1))
    print(f"details: {args.workspace / 'results.json'}")


if __name__ == "__main__":
    main()
