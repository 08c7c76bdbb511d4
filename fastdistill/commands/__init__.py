"""Commands of the `fastdistill` CLI that live outside cli.py, each module registering its own
(`register(app)`), so the CLI's entry module does not keep growing."""
