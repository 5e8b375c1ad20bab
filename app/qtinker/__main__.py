import sys

from qtinker.cli import main

sys.exit(main())
