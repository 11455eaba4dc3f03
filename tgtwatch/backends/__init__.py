"""Where tgtd instances run: the backend protocol, the direct and systemd backends, unit files.
Imports tgt, config and model; only the systemd backend calls systemctl."""
