"""kafka-bridge: delivers Apache Kafka records, transformed, to an HTTP API."""

from kafka_bridge.version import __version__

__all__ = ["__version__"]
