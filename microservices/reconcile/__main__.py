import sys

from microservices.reconcile.main import main

sys.exit(main())
