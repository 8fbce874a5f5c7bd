"""`python -m suanli …` is the `suanli` command. (Running `python -m suanli.cli` instead would
load cli.py twice — as `__main__` and as `suanli.cli`, which its command modules import.)"""

from suanli.cli import main

main()
