"""facebench: benchmark and evaluation suite for on-device face models."""
__version__ = "0.1.0"
