"""Placeholder CLI (filled in by the CLI work)."""
import sys


def main() -> None:
    print("parc-surgery: not yet implemented")
    sys.exit(0)


convert_main = main
