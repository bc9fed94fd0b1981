"""The store's schema: named, append-only migrations, applied in order by `Store.migrate`
(loop/store/db.py) and recorded in its `migrations` table. Never edit one that has shipped: add
a new one at the end.
"""

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_foundation", """
    CREATE TABLE models (
        model_id VARCHAR PRIMARY KEY, name VARCHAR NOT NULL, base VARCHAR NOT NULL,
        base_path VARCHAR, adapter VARCHAR, parent_id VARCHAR, created_at TIMESTAMP, meta JSON);
    CREATE TABLE tasks (
        task_id VARCHAR PRIMARY KEY, config_path VARCHAR, data_hash VARCHAR, updated_at TIMESTAMP);
    CREATE TABLE examples (
        task_id VARCHAR NOT NULL, split VARCHAR NOT NULL, example_id VARCHAR NOT NULL,
        instruction VARCHAR NOT NULL, input VARCHAR, output VARCHAR NOT NULL, category VARCHAR,
        PRIMARY KEY (task_id, split, example_id));
    CREATE TABLE runs (
        run_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, task_id VARCHAR, model_id VARCHAR,
        split VARCHAR, params JSON, status VARCHAR NOT NULL, started_at TIMESTAMP,
        finished_at TIMESTAMP, summary JSON);
    CREATE TABLE predictions (
        prediction_id VARCHAR PRIMARY KEY, model_id VARCHAR NOT NULL, prompt_hash VARCHAR NOT NULL,
        gen_hash VARCHAR NOT NULL, prompt VARCHAR NOT NULL, output VARCHAR NOT NULL,
        latency_s DOUBLE, prompt_tokens INTEGER, output_tokens INTEGER, created_at TIMESTAMP);
    CREATE TABLE run_items (
        run_id VARCHAR NOT NULL, example_id VARCHAR NOT NULL, prediction_id VARCHAR NOT NULL,
        PRIMARY KEY (run_id, example_id));
    CREATE TABLE scores (
        prediction_id VARCHAR NOT NULL, task_id VARCHAR NOT NULL, example_id VARCHAR NOT NULL,
        suite_version VARCHAR NOT NULL, check_name VARCHAR NOT NULL, check_version VARCHAR NOT NULL,
        passed BOOLEAN NOT NULL, value DOUBLE, required BOOLEAN NOT NULL, detail JSON,
        created_at TIMESTAMP,
        PRIMARY KEY (prediction_id, task_id, example_id, check_name, check_version));
    """),
    # Later issues append their migrations here, in this order (replace the anchor line):
    ("0002_scoring", """
    CREATE TABLE embeddings (
        text_hash VARCHAR NOT NULL, embed_model VARCHAR NOT NULL, vector FLOAT[] NOT NULL,
        PRIMARY KEY (text_hash, embed_model));
    CREATE TABLE failures (
        run_id VARCHAR NOT NULL, example_id VARCHAR NOT NULL, prediction_id VARCHAR NOT NULL,
        task_id VARCHAR NOT NULL, model_id VARCHAR NOT NULL, split VARCHAR,
        categories VARCHAR[], failed_checks VARCHAR[], similarity DOUBLE, cluster_id VARCHAR,
        PRIMARY KEY (run_id, example_id));
    CREATE TABLE clusters (
        cluster_id VARCHAR NOT NULL, run_id VARCHAR NOT NULL, label VARCHAR,
        dominant_category VARCHAR, top_terms VARCHAR[], size INTEGER, example_ids VARCHAR[],
        seed INTEGER, PRIMARY KEY (run_id, cluster_id));
    CREATE VIEW failures_v AS
        SELECT f.*, e.category AS example_category, e.instruction, e.input,
               e.output AS reference, p.output, p.prompt
        FROM failures f
        JOIN examples e ON e.task_id = f.task_id AND e.example_id = f.example_id
             AND e.split = f.split
        JOIN predictions p ON p.prediction_id = f.prediction_id;
    """),
    ("0003_targeted", """
    CREATE TABLE generated_examples (
        gen_id VARCHAR PRIMARY KEY, batch_id VARCHAR NOT NULL, task_id VARCHAR NOT NULL,
        strategy VARCHAR NOT NULL, cluster_id VARCHAR, failure_ids VARCHAR[], source JSON,
        example_id VARCHAR NOT NULL, instruction VARCHAR NOT NULL, input VARCHAR,
        output VARCHAR NOT NULL, category VARCHAR, status VARCHAR NOT NULL, reason VARCHAR,
        detail VARCHAR, created_at TIMESTAMP);
    CREATE TABLE datasets (
        manifest_hash VARCHAR PRIMARY KEY, batch_id VARCHAR NOT NULL, task_id VARCHAR NOT NULL,
        path VARCHAR NOT NULL, counts JSON, created_at TIMESTAMP);
    CREATE TABLE corrections (
        correction_id VARCHAR PRIMARY KEY, task_id VARCHAR NOT NULL, example_id VARCHAR NOT NULL,
        prediction_id VARCHAR, corrected_output VARCHAR NOT NULL, reviewer VARCHAR,
        created_at TIMESTAMP);
    """),
    ("0004_training", """
    CREATE TABLE training_runs (
        train_id VARCHAR PRIMARY KEY, task_id VARCHAR, base VARCHAR NOT NULL,
        base_model_id VARCHAR, parent_adapter VARCHAR, adapter_path VARCHAR NOT NULL,
        model_id VARCHAR, dataset_hash VARCHAR, config JSON, seed INTEGER, status VARCHAR NOT NULL,
        total_steps INTEGER, steps_done INTEGER, resumed_from_step INTEGER, n_train INTEGER,
        n_dev INTEGER, device VARCHAR, precision VARCHAR, tokens_per_s DOUBLE, peak_mem_mb DOUBLE,
        train_loss DOUBLE, best_eval_loss DOUBLE, versions JSON, created_at TIMESTAMP,
        finished_at TIMESTAMP);
    CREATE TABLE train_logs (
        train_id VARCHAR NOT NULL, step INTEGER NOT NULL, loss DOUBLE, eval_loss DOUBLE,
        learning_rate DOUBLE, tokens_per_s DOUBLE, peak_mem_mb DOUBLE, epoch DOUBLE,
        PRIMARY KEY (train_id, step));
    """),
    ("0005_benchmarks", """
    CREATE TABLE benchmark_results (
        model_id VARCHAR NOT NULL, benchmark VARCHAR NOT NULL, benchmark_version VARCHAR NOT NULL,
        limit_n INTEGER NOT NULL, shots INTEGER NOT NULL, task VARCHAR NOT NULL,
        metric VARCHAR NOT NULL, value DOUBLE, stderr DOUBLE, n INTEGER NOT NULL,
        task_version VARCHAR NOT NULL, higher_is_better BOOLEAN, model_name VARCHAR,
        base VARCHAR NOT NULL, adapter_hash VARCHAR, seed INTEGER, data_source VARCHAR,
        lm_eval_version VARCHAR NOT NULL, backend VARCHAR NOT NULL, dtype VARCHAR, wall_s DOUBLE,
        created_at TIMESTAMP,
        PRIMARY KEY (model_id, benchmark, benchmark_version, limit_n, shots, task, metric));
    CREATE TABLE benchmark_samples (
        model_id VARCHAR NOT NULL, benchmark VARCHAR NOT NULL, benchmark_version VARCHAR NOT NULL,
        limit_n INTEGER NOT NULL, shots INTEGER NOT NULL, task VARCHAR NOT NULL,
        doc_id INTEGER NOT NULL, prompt VARCHAR, choices JSON, target VARCHAR, responses JSON,
        metrics JSON, doc JSON, created_at TIMESTAMP,
        PRIMARY KEY (model_id, benchmark, benchmark_version, limit_n, shots, task, doc_id));
    """),
    ("0006_arena", """
    CREATE TABLE matches (
        match_id VARCHAR PRIMARY KEY, task_id VARCHAR, example_id VARCHAR,
        model_a VARCHAR NOT NULL, model_b VARCHAR NOT NULL, judge VARCHAR NOT NULL,
        shown_first VARCHAR, verdict VARCHAR, error VARCHAR, voter VARCHAR, detail JSON,
        created_at TIMESTAMP);
    CREATE TABLE rating_snapshots (
        snapshot_id VARCHAR PRIMARY KEY, task_id VARCHAR, judge VARCHAR NOT NULL,
        n INTEGER NOT NULL, seed INTEGER NOT NULL, ratings JSON, created_at TIMESTAMP);
    """),
    ("0007_cycle", """
    CREATE TABLE cycles (
        cycle_id VARCHAR PRIMARY KEY, task_id VARCHAR NOT NULL, attempt INTEGER NOT NULL,
        status VARCHAR NOT NULL, champion_id VARCHAR, champion_name VARCHAR, candidate_id VARCHAR,
        candidate_name VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP, summary JSON);
    CREATE TABLE cycle_stages (
        cycle_id VARCHAR NOT NULL, stage VARCHAR NOT NULL, status VARCHAR NOT NULL,
        started_at TIMESTAMP, finished_at TIMESTAMP, result JSON, error VARCHAR,
        PRIMARY KEY (cycle_id, stage));
    CREATE TABLE champions (
        task_id VARCHAR NOT NULL, model_id VARCHAR NOT NULL, model_name VARCHAR NOT NULL,
        since TIMESTAMP NOT NULL, cycle_id VARCHAR, reason VARCHAR,
        PRIMARY KEY (task_id, since));
    CREATE TABLE gate_decisions (
        cycle_id VARCHAR PRIMARY KEY, promote BOOLEAN NOT NULL, p_value DOUBLE, reasons JSON,
        champion_pass_rate DOUBLE, candidate_pass_rate DOUBLE, created_at TIMESTAMP);
    """),
    ("0008_reviews", """
    CREATE TABLE reviews (
        review_id VARCHAR PRIMARY KEY, task_id VARCHAR, example_id VARCHAR, prediction_id VARCHAR,
        action VARCHAR NOT NULL, note VARCHAR, category VARCHAR, reviewer VARCHAR,
        created_at TIMESTAMP);
    """),
    # What went wrong per failure (evals.signatures) and the signatures that name a cluster.
    ("0009_failure_signatures", """
    ALTER TABLE failures ADD COLUMN signatures VARCHAR[];
    ALTER TABLE clusters ADD COLUMN signatures VARCHAR[];
    CREATE OR REPLACE VIEW failures_v AS
        SELECT f.*, e.category AS example_category, e.instruction, e.input,
               e.output AS reference, p.output, p.prompt
        FROM failures f
        JOIN examples e ON e.task_id = f.task_id AND e.example_id = f.example_id
             AND e.split = f.split
        JOIN predictions p ON p.prediction_id = f.prediction_id;
    """),
    # Which train-pool rows a few-shot prompt showed with each item (loop/evaluation/prompting)
    ("0010_run_item_shots", """
    ALTER TABLE run_items ADD COLUMN shot_ids VARCHAR[];
    """),
    # GRPO (loop/train/grpo.py) logs the mean suite reward of each logging step's completions.
    ("0011_train_log_reward", """
    ALTER TABLE train_logs ADD COLUMN reward DOUBLE;
    """),
]
