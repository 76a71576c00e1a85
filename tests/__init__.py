"""kafka-bridge test suite."""
