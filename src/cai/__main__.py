from cai.cli import entry

raise SystemExit(entry())
