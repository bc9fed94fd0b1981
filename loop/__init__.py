"""evalloop: evaluation-driven iteration for fine-tuning small language models (orchestration side)."""

__version__ = "0.1.0"
