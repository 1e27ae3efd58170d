"""vitcli: see how a Vision Transformer turns an image into tokens."""

__version__ = "0.1.0"
