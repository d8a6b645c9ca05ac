"""Integrator side: event builder, Kafka SDK, HTTP gateway, traffic simulator."""
