"""`python -m tgtwatch`."""

from tgtwatch.cli import main_entry

main_entry()
