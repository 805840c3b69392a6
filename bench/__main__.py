"""`python -m bench` == the `equibench` command."""

import sys

from bench.cli import main

sys.exit(main())
