import sys

from attnlab.study.cli import main

sys.exit(main())
