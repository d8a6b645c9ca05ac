"""The pure domain: events, state, rules, the business calendar, decisions, log records.

Nothing here touches Kafka, SQL, HTTP, processes or the wall clock; every
function is a function of its arguments, so replaying the same log gives the
same decisions. An import-linter contract in the tests keeps it so.
"""
