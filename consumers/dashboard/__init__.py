"""The built-in operations dashboard: ``GET /dashboard`` and its JSON, ``GET /api/v1/dashboard``.

- :mod:`.view`: what the page shows, read from the metrics registry (as
  ``/metrics`` exports it), the store (the units' ranking) and the configuration;
- :mod:`.render`: that data as HTML, through the Jinja2 templates in ``templates/``;
- :mod:`.words`: the page's words in Persian and English;
- :mod:`.routes`: the aiohttp routes, serving ``static/`` (stylesheet, script) too.
"""

from __future__ import annotations

from sada.consumers.dashboard.render import local_name, render_content, render_page
from sada.consumers.dashboard.routes import DashboardView, routes
from sada.consumers.dashboard.view import dashboard_data

__all__ = [
    "DashboardView",
    "dashboard_data",
    "local_name",
    "render_content",
    "render_page",
    "routes",
]
