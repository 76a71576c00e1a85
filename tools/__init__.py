"""Developer commands for running kafka-bridge locally; not installed."""
