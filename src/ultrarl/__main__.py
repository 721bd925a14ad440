from ultrarl.cli import main

raise SystemExit(main())
