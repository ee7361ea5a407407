"""`python -m photostore`, the same as the `photostore` command."""
import sys

from photostore.cli import main

sys.exit(main())
