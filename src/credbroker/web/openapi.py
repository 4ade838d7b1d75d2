"""The OpenAPI 3.1 description served at GET /openapi.json, built from the pydantic models the
handlers parse and answer with (web/schemas.py): nothing here restates a field.

It describes every route: the two vend routes, the admin rotation routes, /healthz, /readyz,
/metrics and itself. Errors share one envelope whatever the status.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from credbroker import __version__
from credbroker.web import schemas_principals
from credbroker.web.schemas import (
    Credentials,
    CredentialsBody,
    ErrorBody,
    Health,
    PresignBody,
    PresignedUrl,
    Readiness,
    RotationOutcome,
    RotationStatuses,
)

_REF = "#/components/schemas/{model}"
_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}  # config: a managed key

_REFUSALS = {
    "400": "malformed or hostile input: invalid_json, invalid_field, invalid_space, ...",
    "401": "missing, malformed or unknown token",
    "403": "the space or access is not allowed for this client (or it is not an admin)",
    "404": "no such managed key or lease, or no rotation configured",
    "408": "the request body did not arrive in time",
    "409": "a rotation holds the lock, is in its grace (grace_not_over), the store is "
    "read-only, or no more revocations fit the role policy (revocation_too_large)",
    "429": "over the client's rate limit (Retry-After says when to try again)",
    "502": "an upstream answered and refused",
    "413": "body too large",
    "415": "not application/json",
    "503": "an upstream is unreachable (Retry-After says when to try again)",
    "default": "any other refusal or failure, in the same envelope",
}


@functools.cache
def document() -> dict[str, Any]:
    from credbroker.web import (
        admin_breakglass,  # it imports handlers, which import this
        admin_leases,  # it imports the handlers, which import this
    )

    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (CredentialsBody, "validation"),
        (PresignBody, "validation"),
        (Credentials, "serialization"),
        (PresignedUrl, "serialization"),
        (Health, "serialization"),
        (ErrorBody, "serialization"),
        (Readiness, "serialization"),
        (RotationOutcome, "serialization"),
        (RotationStatuses, "serialization"),
        *schemas_principals.OPENAPI_MODELS,
        *admin_breakglass.OPENAPI_MODELS,
        *admin_leases.MODELS,
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
            "/readyz": {
                "get": {
                    "summary": "Would a vend succeed? From a cached, single-flight probe",
                    "responses": {
                        "200": {
                            "description": "ready, or degraded (reads served read-only)",
                            "content": json_content(Readiness, "serialization"),
                        },
                        "503": {
                            "description": "not_ready",
                            "content": json_content(Readiness, "serialization"),
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "the text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/v1/admin/rotations": {
                "get": {
                    "summary": "Every managed key's rotation status (admin clients)",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {
                            "description": "key ids, ages, phases; never a secret",
                            "content": json_content(RotationStatuses, "serialization"),
                        },
                        **errors,
                    },
                }
            },
            "/v1/admin/rotations/{name}": {
                "post": {
                    "summary": "Rotate now: a new key (admin clients)",
                    "security": [{"bearer": []}],
                    "parameters": [
                        {"name": "name", "in": "path", "required": True, "schema": _NAME},
                        {"name": "wait", "in": "query", "schema": {"type": "boolean"}},
                        {"name": "end_grace", "in": "query", "schema": {"type": "boolean"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "what the forced run did",
                            "content": json_content(RotationOutcome, "serialization"),
                        },
                        **errors,
                    },
                }
            },
            **schemas_principals.openapi_paths(json_content, errors),
            **admin_breakglass.openapi_paths(json_content, errors),
            **admin_leases.openapi_paths(json_content, errors),
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
