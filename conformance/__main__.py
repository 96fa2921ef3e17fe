"""`python -m adamconf` is the `adamconf` command."""
import sys

from adamconf.cli import main

sys.exit(main())
