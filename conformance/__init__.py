"""The gate: backend protocol, bundled backends, hypothesis checks, runner and CLI."""
