"""The OpenAPI 3.1 description served at GET /openapi.json, built from the pydantic models the
handlers parse and answer with (web/schemas.py): nothing here restates a field.

It describes the caller-facing API: the two vend routes, /healthz and itself. Errors share one
envelope whatever the status.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from credbroker import __version__
from credbroker.web.schemas import (
    Credentials,
    CredentialsBody,
    ErrorBody,
    Health,
    PresignBody,
    PresignedUrl,
)

_REF = "#/components/schemas/{model}"

_REFUSALS = {
    "400": "malformed or hostile input: invalid_json, invalid_field, invalid_space, ...",
    "401": "missing, malformed or unknown token",
    "403": "the space or access is not allowed for this client",
    "413": "body too large",
    "415": "not application/json",
    "503": "an upstream is unreachable (Retry-After says when to try again)",
    "default": "any other refusal or failure, in the same envelope",
}


@functools.cache
def document() -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (CredentialsBody, "validation"),
        (PresignBody, "validation"),
        (Credentials, "serialization"),
        (PresignedUrl, "serialization"),
        (Health, "serialization"),
        (ErrorBody, "serialization"),
    ]
    refs, defs = models_json_schema(models, ref_template=_REF)

    def json_content(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return {"application/json": {"schema": refs[(model, mode)]}}

    errors = {
        status: {"description": text, "content": json_content(ErrorBody, "serialization")}
        for status, text in _REFUSALS.items()
    }

    def vend_route(summary: str, body: type[BaseModel], answer: type[BaseModel]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": [{"bearer": []}],
                "requestBody": {"required": True, "content": json_content(body, "validation")},
                "responses": {
                    "201": {
                        "description": answer.__doc__ or "",
                        "content": json_content(answer, "serialization"),
                    },
                    **errors,
                },
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "credbroker", "version": __version__},
        "paths": {
            "/v1/credentials": vend_route(
                "A temporary object-store key for one space", CredentialsBody, Credentials
            ),
            "/v1/presign": vend_route("A presigned URL for one object", PresignBody, PresignedUrl),
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "responses": {
                        "200": {
                            "description": "up",
                            "content": json_content(Health, "serialization"),
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This description",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
