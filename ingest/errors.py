"""Errors a user can act on: the CLI prints them as one line and exits non-zero."""


class IngestError(Exception):
    """A failure caused by input or environment, reported without a traceback."""
