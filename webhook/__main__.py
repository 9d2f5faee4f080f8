"""``python -m webhook`` runs the CLI, as the ``spotguard`` console script does."""

import sys

from webhook.cli import main

sys.exit(main())
