"""Pure data and pure functions: frozen specs, observations, actions, plan(), status, reports.
Imports nothing of tgtwatch outside model; no I/O, no clock."""
