"""The Kafka shells around the domain: ingress and projector stages, the projector's process.

Each stage decodes what it fetched, hands it to the pure core, and writes what
the core decided; the store is reached through its port only.
"""
