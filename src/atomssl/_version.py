"""The package version, in a module of its own so that any subpackage can read it without
importing the top-level facade (``atomssl/__init__.py``), which imports the subpackages."""

__version__ = "0.1.0"
