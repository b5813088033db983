import sys

from microservices.position_state_brain.main import main

sys.exit(main())
