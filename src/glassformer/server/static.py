"""Where the page and the docs' files live: the page in the package's `viz/static/`
(explorer.html, explorer.js, grid.js, style.css), Swagger UI in fastapi-offline's package."""

from __future__ import annotations

from importlib import resources


def static_dir():
    return resources.files("glassformer.viz").joinpath("static")


def swagger_dir():
    """Swagger UI's files from the fastapi-offline package, or None when it is not installed."""
    try:
        found = resources.files("fastapi_offline").joinpath("static")
    except ModuleNotFoundError:
        return None
    return found if found.joinpath("swagger-ui-bundle.js").is_file() else None


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>glassformer explorer: API</title>
<link rel="stylesheet" href="/docs-static/swagger-ui.css">
<link rel="icon" href="/docs-static/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs-static/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body>
</html>
"""
