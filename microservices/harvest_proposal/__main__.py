import sys

from microservices.harvest_proposal.main import main

sys.exit(main())
