"""Sada's event contracts, as data: one JSON Schema (2020-12) per event type and version.

``cloudevent.v1.json`` is the CloudEvents 1.0 envelope every message value
follows; ``<type>.v<n>.json`` describes the ``data`` of one event type, and its
``$id`` is the CloudEvents ``dataschema`` value; ``sada.common.v1.json`` holds
the value types they share. ``examples/`` holds whole events that are valid,
or invalid for the reason their file name gives
(``<type>.invalid.<reason>.<what>.json``).

:mod:`sada.infra.contracts` loads and applies these files. Outside tools can use
them as they are, with one addition: the ``sada-tracking-code`` format (the
last digit is the Damm check digit of the others, see :mod:`sada.pipeline.domain.tracking`)
must be registered with their validator, or wrong check digits pass.
"""
