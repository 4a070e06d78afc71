"""failback package."""
