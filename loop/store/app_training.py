"""The training page's reads of the snapshot: training runs and their step logs, the targeted
batches' candidates (by strategy, status and reason) and the current champion.
"""

from __future__ import annotations

from loop.store.app_queries import column_values, has
from loop.store.db import Store


def current_champion(store: Store, task_id: str | None = None) -> str | None:
    """The latest champion's model id (for the task when given); else the latest cycle's."""
    for table, column, order in (("champions", "model_id", "since"),
                                 ("cycles", "champion_id", "started_at")):
        if has(store, table):
            sql = f"SELECT {column} AS v FROM {table}"
            rows = column_values(store, sql + (" WHERE task_id = ?" if task_id else "") +
                                 f" ORDER BY {order} DESC LIMIT 1", [task_id] if task_id else [])
            if rows:
                return rows[0]
    return None


def training_runs(store: Store) -> list[dict]:
    if not has(store, "training_runs"):
        return []
    return store.query("SELECT train_id, task_id, model_id, status, steps_done, total_steps, "
                       "n_train, train_loss, best_eval_loss, tokens_per_s, peak_mem_mb, device, "
                       "precision, seed, created_at FROM training_runs ORDER BY created_at")


def train_logs(store: Store) -> list[dict]:
    if not has(store, "train_logs"):
        return []
    return store.query("SELECT train_id, step, loss, eval_loss, learning_rate, tokens_per_s, "
                       "peak_mem_mb FROM train_logs ORDER BY train_id, step")


def generated_summary(store: Store) -> list[dict]:
    """Generated candidates per batch, strategy, status and rejection reason."""
    if not has(store, "generated_examples"):
        return []
    return store.query("SELECT batch_id, strategy, status, coalesce(reason, '') AS reason, "
                       "count(*) AS n FROM generated_examples GROUP BY ALL "
                       "ORDER BY batch_id, strategy, status, n DESC")


def generated_examples(store: Store, status: str | None = None, strategy: str | None = None,
                       limit: int = 200) -> list[dict]:
    """Generated items with provenance (strategy, cluster, failures, source) and outcome."""
    if not has(store, "generated_examples"):
        return []
    where, params = [], []
    for column, value in (("g.status", status), ("g.strategy", strategy)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    cluster_label = ("(SELECT any_value(c.label) FROM clusters c WHERE c.cluster_id = "
                     "g.cluster_id)" if "clusters" in store.tables() else "NULL")
    return store.query(
        f"SELECT g.batch_id, g.strategy, g.status, g.reason, g.category, "
        f"{cluster_label} AS cluster, g.failure_ids, g.source, g.instruction, g.input, "
        f"g.output, g.detail FROM generated_examples g "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY g.created_at DESC, g.gen_id LIMIT ?", params + [int(limit)])
