"""occ/report/data."""
