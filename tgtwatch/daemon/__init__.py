"""The level-triggered loop: watch, debounce, wakeup, per-port lanes, reconcile, state, lock.
Imports every layer below it (backends, telemetry, tgt, config, model), never cli."""
