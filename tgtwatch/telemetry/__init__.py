"""What tgtwatch tells the world: sd_notify, the journal client, the audit trail, metrics.
Imports model only; independent of the backends."""
