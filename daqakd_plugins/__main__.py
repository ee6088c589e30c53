import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while Python imports daqakd: no traceback, the shell's 130
    print("daqakd: interrupted while starting; nothing was done.", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
