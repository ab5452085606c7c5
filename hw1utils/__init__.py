"""hw1utils: the tested package behind the HW1 notebooks (deep vs shallow, optimization, generalization)."""

__version__ = "0.1.0"
