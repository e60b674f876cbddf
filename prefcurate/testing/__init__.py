"""Helpers for tests and dry runs, never used by a real run: a local server speaking the Anthropic
Messages API (`python -m prefcurate.testing.messages_api`)."""
