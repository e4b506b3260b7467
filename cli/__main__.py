from srdeploy.cli import main

raise SystemExit(main())
