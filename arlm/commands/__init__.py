"""Job types this package adds to the ``xlm`` CLI (registered in ``configs/commands.yaml``)."""
