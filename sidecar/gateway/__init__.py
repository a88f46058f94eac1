"""The HTTP front doors: an OpenAI-compatible gateway and LiteLLM's generic guardrail API.

Both convert HTTP/JSON to domain inspections and call the same
`sidecar.service.inspector.Inspector` as the gRPC door, so none can skip pseudonyms,
audit or metrics. Imported only when `gateway_listen` is set (aiohttp loads then).
"""
