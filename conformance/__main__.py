"""`python -m conformance` is the `adamconf` command."""
import sys

from conformance.cli import main

sys.exit(main())
