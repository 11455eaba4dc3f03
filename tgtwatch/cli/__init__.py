"""The command line: arguments, commands, exit codes and the wiring of `run`.
The top layer: may import every other layer; nothing imports it."""
