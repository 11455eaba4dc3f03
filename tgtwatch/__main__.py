"""`python -m tgtwatch`."""

from tgtwatch.cli.main import main_entry

main_entry()
