"""The use case every front door calls (gRPC, the HTTP gateway, LiteLLM's guardrail API)."""
