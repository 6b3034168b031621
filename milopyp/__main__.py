import sys

from milopyp.cli import main

sys.exit(main())
