"""`python -m local_api`: see local_api.cli."""

from local_api.cli import main

raise SystemExit(main())
