"""Task functions and a worker entry point for the tests that run workers as processes."""
