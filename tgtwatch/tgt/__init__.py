"""The only code that talks to tgtd: argv builders, the one runner and spawner, output parsers.
Imports model and config; never systemctl, never the daemon."""
