"""Stand-ins for the services the worker harness talks to, as real HTTP servers."""
