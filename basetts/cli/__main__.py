"""`python -m basetts.cli`: the `basetts` command."""
import sys

from .main import main

sys.exit(main())
