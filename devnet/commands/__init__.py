"""The `devnet` subcommands, a few per module; each module's `register(app)` adds its commands
(devnet/cli.py calls it, one line per module)."""
