"""The exit codes of every command, in one place (README's CLI table lists them)."""

EXIT_OK = 0
EXIT_PROBLEMS = 1  # invalid files, failed actions, or not converged yet
EXIT_USAGE = 2  # bad command line or settings file
EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug; one line, never a traceback
EXIT_BUSY = 75  # EX_TEMPFAIL: another tgtwatch holds state_dir/lock; nothing was done
EXIT_TIMEOUT = 124  # as timeout(1): `wait` gave up before every instance was decided
