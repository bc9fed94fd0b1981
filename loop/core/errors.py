"""The exception hierarchy. Library code raises these; only `loop.cli` turns them into exit codes."""


class EvalloopError(Exception):
    """A problem the user can fix; its message is shown as one paragraph, without a traceback."""

    exit_code = 2


class ConfigError(EvalloopError):
    """A task or cycle TOML is missing, malformed or invalid."""


class TaskDataError(EvalloopError):
    """A task's JSONL data is malformed (the message names file, line and field)."""


class ModelError(EvalloopError):
    """A model name does not resolve, or its weights cannot be loaded."""


class StoreError(EvalloopError):
    """The DuckDB store cannot be opened or written (locked, corrupt, disk full)."""


class BenchmarkDataError(EvalloopError):
    """A benchmark's data is neither on the hub nor in the configured local directory."""


class LockedError(EvalloopError):
    """Another run holds the lock."""

    exit_code = 75  # EX_TEMPFAIL: cron may retry later


class EndpointError(EvalloopError):
    """A model endpoint kept failing after its retries (rate limit, server error, timeout): a
    passing problem, not a wrong setting."""

    exit_code = 75  # EX_TEMPFAIL: cron may retry later; a cycle resumes where it stopped


class Interrupted(KeyboardInterrupt):
    """A signal asked the process to stop (SIGTERM, SIGHUP): handled like Ctrl-C, so finished
    work is kept, an unfinished run is marked `interrupted`, and the exit code says which."""

    def __init__(self, signal_name: str, exit_code: int):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = exit_code
