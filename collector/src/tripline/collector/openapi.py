"""The HTTP API's OpenAPI document, under its old import path.

The document is written from the routes' declarations in `tripline.collector.api`
(`api.routing`, `api.openapi`); this module only keeps ``openapi_document`` importable here.
"""

from tripline.collector.api.app import openapi_document

__all__ = ["openapi_document"]
