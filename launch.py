"""Start the Studio web app: the same as `python -m studio ui` (try --help)."""

import sys

from studio.ui.app import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
