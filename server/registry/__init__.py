"""The forget-target registry: typed records, two backends (local file store, Redis) and change events."""
