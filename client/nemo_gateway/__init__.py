"""``nemo-gateway``: an OpenAI / NIM-compatible HTTP API in front of Triton's gRPC endpoint.

``app.create_app(settings)`` builds the FastAPI app; ``cli`` runs it. One concept a module:

* ``settings``: ``GatewaySettings``; ``version``: the release reported;
* ``dependencies``: settings, metrics and the Triton client from ``app.state``; ``auth``: the API key check;
  ``metering``: which endpoint a request counts under, since when; ``request_body``: the JSON body, size-limited;
* ``routes_completions`` (chat and text), ``routes_models``, ``routes_service`` (health, metrics, version),
  the OpenAI ones built by ``openai_router`` (metered, API key);
* ``relay``: an upstream result as JSON or SSE; ``errors``: the one exception handler; ``metrics``: Prometheus.
"""
