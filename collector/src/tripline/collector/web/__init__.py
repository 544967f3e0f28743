"""The operator's ticket page: server-rendered HTML under /ui on the collector's HTTP port.

Every read and write goes through the HTTP API (`collector.api`), called in process with
the operator's own API token, so the page can do exactly what that token may do through
the API and nothing more. See docs/operator-page.md.
"""

from tripline.collector.urls import WEB_PREFIX
from tripline.collector.web.pages import build_web

__all__ = ["WEB_PREFIX", "build_web"]
