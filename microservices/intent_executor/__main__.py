import sys

from microservices.intent_executor.main import main

sys.exit(main())
