"""The one place the package version is written; packaging reads it too."""

__version__ = "0.1.0"
