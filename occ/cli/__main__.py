"""``python -m occ.cli``."""

from occ.cli import main

main()
