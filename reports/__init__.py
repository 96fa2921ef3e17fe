"""Rendering result records (results.json) as Markdown, JUnit XML and HTML.

Everything here reads the JSON record only, so a report can be rebuilt from a saved
run without the backend or the reference.
"""
