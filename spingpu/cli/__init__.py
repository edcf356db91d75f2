"""The ``spingpu`` command line."""
