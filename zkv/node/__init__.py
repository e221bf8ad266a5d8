"""The zkv-node server: one package, one job per module (server, coordinator, replica,
membership, metrics)."""
