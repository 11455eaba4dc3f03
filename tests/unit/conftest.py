"""The unit tests' fixtures; their builders live in builders.py."""

from builders import policy, settings

__all__ = ["policy", "settings"]
