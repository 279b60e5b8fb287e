"""`python -m basetts`: the `basetts` command, where the script is not on PATH."""
import sys

from .cli import main

sys.exit(main())
