import sys

from microservices.intent_bridge.main import main

sys.exit(main())
