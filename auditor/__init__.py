"""auditor: measure a PyTorch block on several model compilers against a real-time deadline."""

__version__ = "0.1.0"
