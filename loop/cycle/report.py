"""The per-cycle report: Markdown and HTML with PNG plots, under `<workspace>/cycles/<id>/report/`.

Sections: gate decision and reasons, the prompt arm (the champion zero- and k-shot on dev beside
the candidate, per category, and whether prompting already matches it), per-category pass rates before/after (test), the failure
signatures of the dev run (what went wrong), the fix rate of each targeted failure cluster (its
dev members, which training never saw), the answer classes of the training data against the
pool's and the failures' (a class that vanished from the data is marked), benchmark deltas
(paired: interval and minimum detectable effect per benchmark and pooled), the training loss
curve, and the leaderboard.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in cron
import matplotlib.pyplot as plt  # noqa: E402

from evals.signatures import Signature  # noqa: E402
from loop.cycle.gate import PromotionDecision  # noqa: E402
from loop.cycle.results import CycleResults  # noqa: E402
from loop.store.cycles import stage_seconds  # noqa: E402
from loop.store.db import Store  # noqa: E402
from loop.store.training import loss_curve  # noqa: E402
from loop.data.tasks import Task  # noqa: E402


def _bar_pairs(path: Path, labels: list[str], before: list[float], after: list[float],
               title: str, ylabel: str, names=("champion", "candidate")) -> Path:
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) + 2), 3.6))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], before, width=0.4, label=names[0], color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], after, width=0.4, label=names[1], color="#2f80ed")
    ax.set_xticks(list(xs), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _category_rows(results: CycleResults) -> list[tuple[str, float, float]]:
    ev = results.eval_candidate
    before, after = ev.champion_test.per_category, ev.candidate_test.per_category
    return [(c, before[c]["pass_rate"], after.get(c, {}).get("pass_rate", 0.0)) for c in before]


def _cluster_rows(results: CycleResults) -> list[tuple[str, int, int]]:
    """(cluster label, failing dev members before, still failing after)."""
    after = results.eval_candidate.candidate_dev.outcomes
    rows = []
    for cluster in results.failures.clusters if results.failures else ():
        members = cluster.get("example_ids", [])
        still = sum(1 for m in members if not after.get(m, False))
        rows.append((cluster.get("label", cluster.get("cluster_id", "?")), len(members), still))
    return sorted(rows, key=lambda r: -r[1])


EXAMPLE_CLUSTERS = 8  # clusters shown with an example, largest first
EXAMPLE_CHARS = 160  # a cell's text is clipped for the table (never in the store)


def _cluster_examples(store: Store, results: CycleResults) -> list[str]:
    """One dev member of each large cluster: its input, the reference, the champion's
    failing answer and the candidate's answer on the same item, so a reader sees what the
    cluster's label means (free text especially)."""
    if not results.failures or not results.failures.clusters or not results.eval_candidate:
        return []
    from loop.store.runs import run_item_rows

    before = {r["example_id"]: r for r in run_item_rows(store, results.failures.run_id)}
    after = {r["example_id"]: r for r in run_item_rows(
        store, results.eval_candidate.candidate_dev.run_id)}
    lines = ["## Examples per cluster (dev: reference, champion, candidate)", "",
             "| cluster | asked | reference | champion | candidate |", "|---|---|---|---|---|"]
    shown = 0
    for cluster in sorted(results.failures.clusters, key=lambda c: -len(c.get("example_ids", []))):
        member = next((m for m in cluster.get("example_ids", []) if m in before), None)
        if member is None:
            continue
        row, new = before[member], after.get(member)
        asked = row["input"] or row["instruction"]  # the input varies; an instruction rarely
        answer = "–" if new is None else \
            f"{'pass' if new['passed'] else 'fail'}: {_cell(new['prediction'])}"
        lines.append(f"| {_cell(cluster.get('label', ''), 60)} | {_cell(asked)} | "
                     f"{_cell(row['reference'])} | {_cell(row['prediction'])} | {answer} |")
        shown += 1
        if shown == EXAMPLE_CLUSTERS:
            break
    return lines + [""] if shown else []


def _cell(text, width: int = EXAMPLE_CHARS) -> str:
    """Table-safe text: one line, pipes escaped, clipped for display."""
    flat = " ".join(str(text or "").split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def _signature_lines(sigs: Sequence[dict], top: int = 10) -> list[str]:
    """The dev run's failure signatures ({signature, count, share, examples} rows)."""
    if not sigs:
        return []
    lines = ["## Failure signatures (dev, champion)", "",
             "| signature | count | share | examples |", "|---|---:|---:|---|"]
    lines += [f"| `{Signature.parse(str(s.get('signature'))).display()}` | {s.get('count', 0)} | {s.get('share', 0):.1%} | "
              f"{', '.join(map(str, s.get('examples', [])[:2]))} |" for s in sigs[:top]]
    if len(sigs) > top:
        lines.append(f"| ... {len(sigs) - top} more | | | |")
    return lines + [""]


def _distribution_lines(dist: dict | None, top: int = 20) -> list[str]:
    """Answer classes: share of pool, failures and training data; vanished ones always shown."""
    dist = dist or {}
    rows = dist.get("classes") or []
    if not rows:
        return []
    n = dist.get("n", {})
    lines = ["## Answer classes: training data vs pool vs failures", ""]
    if dist.get("vanished"):
        lines += [f"**Warning: {len(dist['vanished'])} answer class(es) common in the pool or "
                  f"the failures are (nearly) absent from the training data: "
                  f"{', '.join(f'`{c}`' for c in dist['vanished'][:10])}.**", ""]
    lines += [f"| class | pool (n={n.get('pool', '?')}) | failures (n={n.get('failures', '?')}) "
              f"| training data (n={n.get('data', '?')}) | |", "|---|---:|---:|---:|---|"]
    shown = [r for i, r in enumerate(rows) if i < top or r.get("vanished")]
    lines += [f"| `{r['class']}` | {r['pool']:.1%} | {r['failures']:.1%} | {r['data']:.1%} | "
              f"{'**VANISHED**' if r.get('vanished') else ''} |" for r in shown]
    if len(rows) > len(shown):
        lines.append(f"| ... {len(rows) - len(shown)} more classes | | | | |")
    return lines + [""]


def _prompt_arm_lines(arm) -> list[str]:
    """Step one of the recipe beside the candidate: the champion prompted, per category (dev)."""
    if arm is None:
        return []
    if arm.skipped:
        return ["", f"Prompt arm: skipped ({arm.reason})."]
    k = arm.shots
    lines = ["", "## Prompt arm: the champion prompted, beside the candidate (dev split)", "",
             f"**{arm.note[0].upper() + arm.note[1:]}**", "",
             f"| category | n | champion zero-shot | champion {k}-shot | candidate |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {c} | {r['n']} | {r['zero_shot']:.1%} | {r['k_shot']:.1%} | "
              f"{r['candidate']:.1%} |" for c, r in arm.per_category.items()]
    lines += [f"| overall | {arm.zero_shot.n} | {arm.zero_shot.pass_rate:.1%} | "
              f"{arm.k_shot.pass_rate:.1%} | {arm.candidate_pass_rate:.1%} |"]
    return lines


def _loss_plot(store: Store, train_id: str | None, path: Path) -> Path | None:
    rows = loss_curve(store, train_id) if train_id else []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    train = [(r["step"], r["loss"]) for r in rows if r["loss"] is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r["eval_loss"] is not None]
    if train:
        ax.plot(*zip(*train), label="train loss", color="#2f80ed")
    if evals:
        ax.plot(*zip(*evals), "o-", label="dev loss", color="#eb5757")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(store: Store, task: Task, cycle_id: str, results: CycleResults,
                 cycle_dir: Path) -> Path:
    out = cycle_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    gate = results.gate
    cats = _category_rows(results)
    clusters = _cluster_rows(results)
    deltas = results.benchmarks.deltas if results.benchmarks else {}
    plots = {"categories": _bar_pairs(out / "categories.png", [c for c, _, _ in cats],
                                      [b for _, b, _ in cats], [a for _, _, a in cats],
                                      "Test pass rate per category", "pass rate")}
    if clusters:
        plots["clusters"] = _bar_pairs(out / "clusters.png", [c[:28] for c, _, _ in clusters],
                                       [b for _, b, _ in clusters], [a for _, _, a in clusters],
                                       "Failing dev items per targeted cluster", "failures",
                                       ("before", "after"))
    if deltas:
        plots["benchmarks"] = _bar_pairs(out / "benchmarks.png", list(deltas),
                                         [0.0] * len(deltas), list(deltas.values()),
                                         "Benchmark change (candidate - champion)", "delta",
                                         ("zero", "delta"))
    loss = _loss_plot(store, results.train.train_id if results.train else None, out / "loss.png")
    if loss:
        plots["loss"] = loss
    md = _markdown(task, cycle_id, results, gate, cats, clusters, deltas, plots,
                   _cluster_examples(store, results))
    md += _stage_lines(stage_seconds(store, cycle_id))
    (out / "report.md").write_text(md, encoding="utf-8")
    (out / "report.html").write_text(_html(md, task.name, cycle_id), encoding="utf-8")
    return out / "report.html"


def _stage_lines(seconds: dict[str, float]) -> str:
    """Where the cycle's time went (the report stage itself is still running)."""
    if not seconds:
        return ""
    lines = ["", "## Stage times", "", "| stage | seconds | share |", "|---|---:|---:|"]
    total = sum(seconds.values()) or 1.0
    lines += [f"| {stage} | {sec:.1f} | {sec / total:.0%} |" for stage, sec in seconds.items()]
    lines += [f"| total | {total:.1f} | |"]
    return "\n".join(lines) + "\n"


def _markdown(task, cycle_id, results: CycleResults, gate: PromotionDecision, cats, clusters,
              deltas, plots, examples: Sequence[str] = ()) -> str:
    ev = results.eval_candidate
    verdict = "PROMOTED" if gate.promote else "KEPT the champion"
    lines = [f"# evalloop cycle {cycle_id} — task `{task.name}`", "",
             f"**Gate: {verdict}.** Test pass rate {gate.champion_pass_rate:.1%} → "
             f"{gate.candidate_pass_rate:.1%} (McNemar p = {gate.p_value:.3g}).", "",
             f"- champion: `{ev.champion_test.model}`",
             f"- candidate: `{ev.candidate_test.model}`", "",
             "| check | passed | result | difference | interval | MDE | detail |",
             "|---|---|---|---:|---|---:|---|"]
    lines += [f"| {r.check} | {'yes' if r.passed else 'NO'} | {r.status or ''} | "
              f"{_num(r.delta)} | {_span(r.lower, r.upper)} | {_num(r.mde, signed=False)} | "
              f"{r.detail} |" for r in gate.reasons]
    lines += ["", "Difference: candidate − champion on the same items; interval: "
              "two-sided, from the per-item differences; MDE: the smallest change the check "
              "sees with its `power` (a check whose MDE exceeds its tolerance cannot tell).", ""]
    lines += _prompt_arm_lines(results.prompt_arm)
    lines += ["", "## Per category (test split)", "", "| category | champion | candidate | change |",
              "|---|---:|---:|---:|"]
    lines += [f"| {c} | {b:.1%} | {a:.1%} | {a - b:+.1%} |" for c, b, a in cats]
    lines += ["", "![per category](categories.png)", ""]
    lines += _signature_lines(results.failures.signatures if results.failures else ())
    if clusters:
        lines += ["## Targeted failure clusters (dev members, never trained on)", "",
                  "| cluster | failing before | failing after | fix rate |", "|---|---:|---:|---:|"]
        lines += [f"| {c} | {b} | {a} | {(b - a) / b if b else 0:.0%} |" for c, b, a in clusters]
        lines += ["", "![clusters](clusters.png)", ""]
    lines += list(examples)
    lines += _distribution_lines(results.targeted.answer_distribution if results.targeted
                                 else None)
    if deltas:
        lines += _benchmark_lines(results.benchmarks)
    lines += _data_lines(results)
    if "loss" in plots:
        lines += ["![loss](loss.png)", ""]
    board = results.arena.leaderboard if results.arena else ()
    if board:
        lines += ["## Leaderboard (Bradley-Terry, 95% bootstrap interval)", "",
                  "| rank | model | rating | interval | matches |", "|---:|---|---:|---|---:|"]
        lines += [f"| {r.get('rank')} | `{r.get('model')}` | {r.get('rating', 0):.0f} | "
                  f"{r.get('lower', 0):.0f}–{r.get('upper', 0):.0f} | {r.get('n_matches', '')} |"
                  for r in board]
        if results.arena.plot:
            lines += ["", f"![win rates]({Path(results.arena.plot).name})"]
    return "\n".join(lines) + "\n"


def _data_lines(results: CycleResults) -> list[str]:
    """What the cycle trained on (its pool plan) and the recipe trials it chose from."""
    plan = results.targeted.plan if results.targeted else None
    trained = results.train
    if not plan and not (trained and trained.search):
        return []
    lines = ["## Training data and recipe", ""]
    if plan:
        kept = trained.search[0].get("start") if trained and trained.search else None
        start = "continuing from the champion's adapter" \
            if plan.get("starts_from") == "champion adapter" else "from the base model"
        if kept == "base" and plan.get("starts_from") == "champion adapter":
            start = "retrained from the base model (it beat continuing on dev)"
        lines += [f"- plan: **{plan['mode']}** ({plan['reason']})",
                  f"- rows: {plan['targeted_rows']} targeted for dev failures + "
                  f"{plan['pool_rows']} pool rows"
                  + (f" ({plan['hard_rows']} the champion is unsure of, {plan['replay_rows']} "
                     "replayed)" if plan["mode"] == "focused" else "")
                  + f", {plan['epochs']:g} epochs, {start}",
                  f"- time: {plan['estimated_train_s']:.0f} s of training estimated "
                  f"({plan['rate_source']}), budget {plan['budget_s']:.0f} s"
                  + (f"; the kept run trained in {trained.elapsed_s:.0f} s" if trained else ""), ""]
    if trained and len(trained.search) > 1:
        lines += ["| learning rate | from | dev pass rate | best dev loss | seconds | kept |",
                  "|---:|---|---:|---:|---:|---|"]
        for i, t in enumerate(trained.search):
            loss = "" if t["best_eval_loss"] is None else f"{t['best_eval_loss']:.4f}"
            lines.append(f"| {t['learning_rate']:g} | {t.get('start', 'champion')} | "
                         f"{t['dev_pass_rate']:.1%} | {loss} | "
                         f"{t['elapsed_s']:.0f} | {'yes' if i == 0 else ''} |")
        lines.append("")
    return lines


def _benchmark_lines(bench) -> list[str]:
    """Each benchmark metric's paired difference (same seeded items) with interval and MDE."""
    stats = {**bench.paired, **bench.pooled}
    sized = f"{bench.limit} seeded items per benchmark" if bench.limit else (
        "the same seeded items, per benchmark: " + ", ".join(
            f"{name} {n}" for name, n in bench.items.items()))
    lines = [f"## Benchmarks (candidate − champion, {sized})",
             "", "| benchmark | champion | candidate | difference | interval | MDE | items |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for name, delta in bench.deltas.items():
        stat = stats.get(name, {})
        lines.append(f"| {name} | {_num(bench.champion.get(name), signed=False)} | "
                     f"{_num(bench.candidate.get(name), signed=False)} | {_num(delta)} | "
                     f"{_span(stat.get('lower'), stat.get('upper'))} | "
                     f"{_num(stat.get('mde'), signed=False)} | {stat.get('n', '')} |")
    lines += [f"| {name} | | | {_num(stat['delta'])} | "
              f"{_span(stat.get('lower'), stat.get('upper'))} | "
              f"{_num(stat.get('mde'), signed=False)} | {stat.get('n', '')} |"
              for name, stat in bench.pooled.items()]
    return lines + ["", "gold_logprob: log-probability of the gold choice among the choices "
                    "(nats per item), a paired signal that moves before accuracy does.", "",
                    "![benchmarks](benchmarks.png)", ""]


def _num(value: float | None, signed: bool = True) -> str:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return "–"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _span(lower: float | None, upper: float | None) -> str:
    if lower is None or upper is None or float("inf") in (abs(lower), abs(upper)):
        return "–"
    return f"[{lower:+.3f}, {upper:+.3f}]"


def _html(md: str, task: str, cycle_id: str) -> str:
    """A dependency-free rendering: tables, headings, images, paragraphs."""
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
            cells = [[html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><tr>{head}</tr>{rest}</table>")
            table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1:-1]
            body.append(f'<img src="{html.escape(src)}" alt="{html.escape(src)}">')
        elif line.strip():
            text = html.escape(line).replace("**", "")
            body.append(f"<p>{text}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:900px;margin:2em auto}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:14px}img{max-width:"
             "100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>evalloop {task} "
            f"{cycle_id}</title><style>{style}</style></head><body>{''.join(body)}</body></html>")
