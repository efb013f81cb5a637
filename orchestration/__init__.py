"""The domain: work items, workers, file locks, usage, events, the queue and its limits."""
