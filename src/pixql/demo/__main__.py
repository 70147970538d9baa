import sys

from pixql.demo import main

sys.exit(main(*sys.argv[1:]))
