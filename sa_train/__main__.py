"""`python -m sa_train` is the same as the `sa-train` command."""

import sys

from sa_train.cli.main import main

sys.exit(main())
