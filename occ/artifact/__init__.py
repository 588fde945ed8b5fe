"""occ/artifact/container."""
