"""Backends bundled with adamconf (numpy always; the framework adapters when installed)."""
