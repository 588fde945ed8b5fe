"""occ/engine."""
