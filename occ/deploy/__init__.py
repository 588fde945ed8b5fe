"""occ/deploy."""
