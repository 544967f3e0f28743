"""Where the collector's HTTP port serves what: one home for the path prefixes the server
mounts and clients (the CLI's --api-url) call. Imports nothing, so a client command can
know the API's path without loading the web framework."""

API_PREFIX = "/api/v1"  # the HTTP API (docs/api.md)
WEB_PREFIX = "/ui"  # the operator's ticket page (docs/operator-page.md)
