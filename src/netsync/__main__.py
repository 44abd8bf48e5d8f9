from netsync.cli import main

raise SystemExit(main())
