"""optline: a self-hosted SMS campaign engine built around consent."""

__version__ = "0.1.0"
