from netsync.ftpd.cli import main

raise SystemExit(main())
