"""Helpers batchyard ships for testing code that uses it.

``batchyard.testing.openai`` is a local OpenAI-compatible server with real rate limits and
fault injection; it needs the ``testing`` extra (starlette, uvicorn).
"""
