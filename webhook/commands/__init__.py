"""The ``spotguard`` subcommands, one module each; :mod:`webhook.cli` dispatches."""
