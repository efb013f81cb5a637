"""Placeholder (issue 11 skeleton)."""
