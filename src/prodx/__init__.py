"""prodx: differential diagnosis for sick production servers."""

__version__ = "0.1.0"
