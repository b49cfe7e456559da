"""Command-line interface (``atomssl VERB ...``)."""
