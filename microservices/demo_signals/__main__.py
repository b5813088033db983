import sys

from microservices.demo_signals.main import main

sys.exit(main())
