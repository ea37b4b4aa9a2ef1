"""One module per `selfdisco` command (see selfdisco/cli.py)."""
