"""toolstack package."""
