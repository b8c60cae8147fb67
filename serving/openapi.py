"""The service's API description: the OpenAPI spec (``GET /docs.json``) with the answers tuneops
gives before a request reaches BentoML (the guard's 401, 413 and 415, the 503 while no model is
served: BentoML documents only its own 400, 404 and 500, and a client generated from the spec
should know the rest), and the page that draws it (``GET /``).

The page is tuneops' own: BentoML's index loads Google Tag Manager from the internet, which an
offline machine cannot reach and a production service should not make its visitors' browsers
call. This one loads only the Swagger UI files BentoML serves itself under ``/static_content/``."""

from __future__ import annotations

from typing import Any

# Every answer is JSON with a one-line ``error`` (serving/guard.py).
GUARD_RESPONSES = {
    401: "Missing or wrong bearer token (`Authorization: Bearer ...`), when the variable named by "
         "`serving.auth_token_env` (TUNEOPS_API_TOKEN) holds a token.",
    413: "Request body over the cap (`serving.max_request_bytes`; unset, what `max_items` inputs at their "
         "limits need, at most 64 MiB). Send fewer or smaller inputs.",
    415: "A multipart upload to a text model (uploads are for image models).",
    503: "Not ready: no model is served yet (the error says why), or the request waited in the queue past "
         "`serving.max_latency_ms`.",
}


def with_guard_responses(spec: Any, api_paths: tuple[str, ...] = ("/classify",)) -> Any:
    """``spec`` (BentoML's OpenAPISpecification) with GUARD_RESPONSES added to each API path's POST."""
    from bentoml._internal.service.openapi.specification import MediaType, Response, Schema

    error = MediaType(schema=Schema(type="object", properties={"error": Schema(type="string")}, required=["error"]))
    for path in api_paths:
        item = spec.paths.get(path)
        operation = getattr(item, "post", None) if item is not None else None
        if operation is None:
            continue
        responses = operation["responses"] if isinstance(operation, dict) else operation.responses
        for status, description in GUARD_RESPONSES.items():
            responses.setdefault(str(status), Response(description=description, content={"application/json": error}))
    return spec


DOCS_PAGE = b"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>tuneops classifier API</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="stylesheet" type="text/css" href="./static_content/index.css" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="./static_content/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script>
      // BentoML's initializer, without Swagger UI's default validator badge (an image from
      // validator.swagger.io): nothing on this page leaves the service.
      window.onload = function () {
        window.ui = SwaggerUIBundle({
          url: "./docs.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          plugins: [SwaggerUIBundle.plugins.DownloadUrl], layout: "StandaloneLayout",
        });
      };
    </script>
  </body>
</html>
"""
