"""Sada: carries people's submissions to the management level that can act on them.

The package is an event-driven pipeline over Kafka. Its parts live in
subpackages: ``sada.pipeline`` (stream processors and the pure decision core),
``sada.consumers`` (read model, archive), ``sada.producers`` (integrator SDK,
gateway, simulator) and ``sada.schemas`` (event contracts, as data).
"""

__version__ = "0.1.0"
