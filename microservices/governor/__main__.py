import sys

from microservices.governor.main import main

sys.exit(main())
