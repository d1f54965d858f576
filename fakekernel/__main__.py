from fakekernel.cli import main

raise SystemExit(main())
