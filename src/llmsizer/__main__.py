from llmsizer.cli import main

raise SystemExit(main())
