"""The `basetts` command: `main` parses the arguments and runs one of say, batch, serve, voices, devices, doctor."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
