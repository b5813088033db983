import sys

from microservices.apply_layer.main import main

sys.exit(main())
