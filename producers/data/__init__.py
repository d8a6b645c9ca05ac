"""Text material the traffic simulator ships as package data.

``sentences.json``: sentences from the seed texts with language tags (Persian
and Russian verbatim, English renderings of the same content).
``templates.json``: phrases that frame them as submissions, responses,
ratings and withdrawals.
"""
