"""The built-in llm task: items rendered through prompt templates, sent to an OpenAI-compatible
chat-completions API, with their tokens counted and their cost priced."""
