"""attachment-relay shared library: settings, vendor clients, tokens and flows."""

__version__ = "0.1.0"
