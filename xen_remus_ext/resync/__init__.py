"""resync package."""
