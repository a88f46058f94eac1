"""Guardrail sidecar: inspects LLM prompts and completions next to the app.

Importing this package is cheap: no spaCy model, no database and no grpc are loaded until
a command or a server asks for them.
"""

__version__ = "0.1.0"
