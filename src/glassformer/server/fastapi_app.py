"""The FastAPI class the explorer is built on (imported only once FastAPI is known to be
installed): FastAPI's own, but /docs offers this server's first model as the example name."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


class ExplorerApp(FastAPI):
    example_model: tuple[str, ...] = ()  # set by create_app

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            for schema in super().openapi().get("components", {}).get("schemas", {}).values():
                field = schema.get("properties", {}).get("model")
                if field is not None and "examples" in field:  # schemas.TextRequest and its kin
                    field["examples"] = list(self.example_model)
        return super().openapi()
