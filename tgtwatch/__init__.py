"""tgtwatch: one isolated tgtd per port, driven by drop-in files."""

__version__ = "0.1.0"
