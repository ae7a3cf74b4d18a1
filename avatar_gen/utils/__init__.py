"""Small shared helpers: atomic file writes, entry-point plumbing, progress bars."""
