"""Loading and validating the bridge configuration."""
