"""The zfkeras version (setup.cfg reads it; exports and run directories record it)."""

__version__ = "0.1.0"
