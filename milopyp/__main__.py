from milopyp.cli import main
import sys

sys.exit(main())
