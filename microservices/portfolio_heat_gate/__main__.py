import sys

from microservices.portfolio_heat_gate.main import main

sys.exit(main())
