"""One module per command: typed functions that return frozen result dataclasses."""
