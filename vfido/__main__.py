from vfido.cli import main

raise SystemExit(main())
