from vfido.entry import main

raise SystemExit(main())
