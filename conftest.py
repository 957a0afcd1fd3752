"""Repository-wide pytest setup: tests never reach the network, and notebooks run in fast mode."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SERPENT_FAST", "1")

# `python -m serpent` runs the CLI on import: not a module to collect doctests from.
collect_ignore = ["serpent/__main__.py"]
