"""Service functions: every state change goes through one of these, in one transaction."""
