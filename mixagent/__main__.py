"""``python -m mixagent <job> ...``: the same as the ``mixagent`` command (:mod:`mixagent.cli`)."""

import sys

from mixagent.cli import main

if __name__ == "__main__":
    sys.exit(main())
